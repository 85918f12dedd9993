"""Non-parametric tag priors p(tag | location) from the training photos around a location.

* ``knn``: the tags of the ``k`` nearest training photos (geodesic), each photo counted once.
* ``kde``: a geodesic Gaussian kernel of ``bandwidth_km`` over the training photos (the per-tag kernel
  density estimates ``f_t(x) = sum_{i has t} K(x, x_i)`` turned into ``p(t | x) = f_t(x) / sum_t' f_t'(x)``),
  truncated to the ``max_neighbours`` nearest photos (beyond a few bandwidths the kernel is ~0; in a
  dense city the nearest few hundred photos carry all of it).

Both are smoothed toward the global tag distribution, ``p(t | x) = (c_x(t) + alpha p_global(t)) /
(sum_t c_x(t) + alpha)`` with ``c_x`` the (weighted) tag counts around x, so every row sums to 1 and
``log`` is finite -- the same backoff form as the frequency prior of ``locsens.eval.baselines``. The
nearest photos come from an exact spatial index (scipy's cKDTree on unit vectors: chord order is
geodesic order). A photo of the index is left out of its own prior with ``exclude_rows`` (training-time
use: its own tags would leak into its prior).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from locsens.geo import EARTH_RADIUS_KM, unit_vectors

KINDS = ("knn", "kde")


class NeighbourPrior:
    """``NeighbourPrior(dataset, "knn", k=100).prior(lat, lon) -> FloatTensor [N, V]`` (rows sum to 1)."""

    def __init__(
        self,
        dataset,
        kind: str = "knn",
        k: int = 100,
        bandwidth_km: float = 25.0,
        max_neighbours: int = 500,
        alpha: float = 1.0,
        split: str = "train",
    ):
        if kind not in KINDS:
            raise ValueError(f"prior kind={kind!r}; expected one of {KINDS}")
        if k < 1 or max_neighbours < 1:
            raise ValueError(f"prior k={k} and max_neighbours={max_neighbours} must be >= 1")
        if bandwidth_km <= 0 or alpha <= 0:
            raise ValueError(f"prior bandwidth_km={bandwidth_km} and alpha={alpha} must be > 0")
        self.kind, self.alpha, self.bandwidth_km = kind, float(alpha), float(bandwidth_km)
        self.k = int(k) if kind == "knn" else int(max_neighbours)
        self.rows = dataset.split_rows(split)
        if len(self.rows) == 0:
            raise ValueError(f"{dataset.path}: the {split} split is empty; a location prior needs training photos")
        self.num_tags = dataset.num_tags
        self.tree = cKDTree(unit_vectors(dataset.lat[self.rows], dataset.lon[self.rows]))
        ptr = dataset.tags_indptr
        lengths = ptr[self.rows + 1] - ptr[self.rows]
        offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        tags = dataset.tags_indices[np.repeat(ptr[self.rows], lengths) + offset]
        member = sp.csr_matrix(
            (np.ones(len(tags), np.float32), (np.repeat(np.arange(len(self.rows)), lengths), tags)),
            shape=(len(self.rows), self.num_tags),
        )
        member.sum_duplicates()
        member.data[:] = 1.0  # a photo's duplicate tags count once
        self.member = member
        count = np.asarray(member.sum(0)).ravel()
        self.p_global = ((count + 1.0) / (count.sum() + self.num_tags)).astype(np.float32)
        self._position = {int(r): i for i, r in enumerate(self.rows)}

    def weights(self, lat, lon, exclude_rows=None) -> sp.csr_matrix:
        """Sparse ``[N, n_train]`` weights of the training photos around each location."""
        lat, lon = np.asarray(lat, np.float64).reshape(-1), np.asarray(lon, np.float64).reshape(-1)
        n = len(lat)
        k = min(self.k + (exclude_rows is not None), len(self.rows))
        chord, idx = self.tree.query(unit_vectors(lat, lon), k=k)
        chord, idx = chord.reshape(n, k), idx.reshape(n, k)
        keep = np.ones((n, k), bool)
        if exclude_rows is not None:  # leave each photo out of its own prior
            own = np.array([self._position.get(int(r), -1) for r in np.asarray(exclude_rows).reshape(-1)])
            keep &= idx != own[:, None]
            # keep exactly the k nearest others
            keep &= np.cumsum(keep, axis=1) <= self.k
        if self.kind == "knn":
            w = np.ones((n, k), np.float32)
        else:
            km = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
            w = np.exp(-0.5 * (km / self.bandwidth_km) ** 2).astype(np.float32)
        w = np.where(keep, w, 0.0)
        return sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, len(self.rows)))

    def prior(self, lat, lon, exclude_rows=None) -> torch.Tensor:
        """Smoothed ``p(tag | location)``, FloatTensor ``[N, V]`` (chunk N: the output is dense)."""
        counts = (self.weights(lat, lon, exclude_rows) @ self.member).toarray().astype(np.float32)
        total = counts.sum(1, keepdims=True)
        out = (counts + self.alpha * self.p_global[None, :]) / (total + self.alpha)
        return torch.from_numpy(out)

    def prior_of(self, lat, lon, tag: int) -> np.ndarray:
        """``p(tag | location)`` of one tag at many locations, float32 ``[N]``: the column ``tag`` of
        :meth:`prior` without the dense ``[N, V]`` (a map of one tag over a grid of the globe)."""
        w = self.weights(lat, lon)
        count = np.asarray(w @ self.member[:, [int(tag)]].toarray()).ravel()
        total = np.asarray(w @ np.asarray(self.member.sum(1))).ravel()
        return ((count + self.alpha * self.p_global[int(tag)]) / (total + self.alpha)).astype(np.float32)


__all__ = ["KINDS", "NeighbourPrior"]
