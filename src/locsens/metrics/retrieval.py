"""Retrieval metrics: location-agnostic and location-sensitive P@k, the upper bound, and query building.

Protocol (paper, "Evaluation protocol"): the candidates are the test images.
* Location-agnostic retrieval: one query per tag with at least ``min_query_images`` test images
  (:meth:`RetrievalCandidates.query_tags`); a retrieved image is relevant if it carries the tag.
* Location-sensitive retrieval: one query per test image = (one random tag of the image, the
  image's location) (:func:`build_location_queries`); queries whose tag has fewer than
  ``min_query_images`` test images are dropped. A retrieved image is relevant at threshold D if it
  carries the tag AND lies within D km (``distance <= D``, great-circle distance from
  :func:`locsens.geo.geodesic_km_torch`) of the query location; D = inf is location-agnostic
  relevance. The upper bound ranks the test images carrying the tag by distance to the query.

Where ranking happens: the metrics receive ranked candidate ids ``retrieved [Q, K]`` (positions in
the candidate set, best first, ``-1`` padding where fewer candidates exist); they do not rank. Scores
of any sign are therefore the ranker's business (:func:`locsens.metrics.tagging.ranked_topk` ranks
any scores, ties to the lower id). P@k = relevant among the first k / k (padding is not relevant,
the denominator is always k, as in the paper's upper bound).

The query's own image stays a candidate by default, as in the paper. With
``exclude_query_image=True`` the metric drops the query's source candidate from each retrieved list
and uses the first k others, so callers must retrieve at least ``k + 1`` (``K >= k + 1`` is checked).

Location-agnostic models (MLC/MCC/HER) answer a location query with their per-tag list:
``retrieved = per_tag_topk[queries.tag]``. The functional forms return per-query precision (for
per-continent or per-frequency breakdowns); :func:`precision_table` averages them in percent.
Computation runs on the CPU, where :class:`RetrievalCandidates` lives (inputs are moved there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from locsens.data.tagsets import TagSets
from locsens.geo import geodesic_km_torch

DEFAULT_THRESHOLDS_KM = (math.inf, 2500.0, 750.0, 200.0, 25.0, 1.0)


def threshold_key(km: float) -> str:
    """Result key of a distance threshold: ``"inf"``, ``"2500km"``, ``"1km"``."""
    return "inf" if math.isinf(km) else f"{km:g}km"


class RetrievalCandidates:
    """The candidate images of a retrieval evaluation: their tags (a ``locsens.data.tagsets.TagSets``, one row
    per candidate) and locations. Candidate ``c`` is row ``rows[c]`` of the source CSR tag matrix.
    Duplicate tags of an image count once."""

    def __init__(self, tags: TagSets, lat: Tensor | None, lon: Tensor | None, rows: Tensor):
        self.tags, self.lat, self.lon, self.rows = tags, lat, lon, rows
        self.num_tags, self.num_candidates = tags.num_tags, tags.num_rows
        self.tag_ptr, self.tag_candidates = tags.tag_major()
        self.cand_ptr = tags.row_ptr

    @classmethod
    def from_csr(cls, indptr, indices, num_tags: int, lat=None, lon=None, rows=None) -> RetrievalCandidates:
        """Candidates = ``rows`` (default: all) of a CSR tag matrix, e.g. ``DatasetStore.tags_indptr`` /
        ``tags_indices`` with ``rows = dataset.split_rows("test")``; ``lat``/``lon`` are per source row."""
        rows = np.arange(len(indptr) - 1) if rows is None else np.asarray(rows, dtype=np.int64)
        pick = lambda a: (
            None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.float64)[torch.as_tensor(rows)]
        )
        return cls(TagSets.from_csr(indptr, indices, num_tags, rows), pick(lat), pick(lon), torch.as_tensor(rows))

    @classmethod
    def from_padded(cls, tags: Tensor, num_tags: int, lat=None, lon=None) -> RetrievalCandidates:
        """Candidates from a padded tag matrix ``[C, T]`` (``-1`` padding)."""
        as64 = lambda a: None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.float64)
        return cls(TagSets.from_padded(tags, num_tags), as64(lat), as64(lon), torch.arange(len(tags)))

    @property
    def keys(self) -> Tensor:
        return self.tags.keys

    def images_per_tag(self) -> Tensor:
        """Number of candidates carrying each tag, LongTensor ``[V]``."""
        return self.tags.rows_per_tag()

    def query_tags(self, min_query_images: int = 10) -> Tensor:
        """Location-agnostic queries: the tags carried by at least ``min_query_images`` candidates."""
        return torch.nonzero(self.images_per_tag() >= min_query_images).squeeze(1)

    def carries(self, candidate: Tensor, tag: Tensor) -> Tensor:
        """Bool, broadcast shape: candidate carries tag (``candidate < 0`` -> False)."""
        return self.tags.contains(candidate, tag)

    def _need_locations(self) -> None:
        if self.lat is None or self.lon is None:
            raise ValueError("these candidates have no locations; build them with lat= and lon=")


@dataclass
class LocationQueries:
    """Location-sensitive queries: tag, location (degrees), and the candidate (and source row) that made it."""

    tag: Tensor  # long [Q]
    lat: Tensor  # float64 [Q]
    lon: Tensor  # float64 [Q]
    candidate: Tensor  # long [Q]: position of the source image in the candidate set
    row: Tensor  # long [Q]: the source image's row in the dataset

    def __len__(self) -> int:
        return len(self.tag)

    def __getitem__(self, index) -> LocationQueries:
        """A batch of queries (slice, index tensor or bool mask), e.g. ``queries[i : i + batch]``."""
        return LocationQueries(
            self.tag[index], self.lat[index], self.lon[index], self.candidate[index], self.row[index]
        )


def build_location_queries(
    candidates: RetrievalCandidates, min_query_images: int = 10, seed: int = 0
) -> LocationQueries:
    """One query per candidate image (the test images): a uniformly random distinct tag of the image
    (seeded numpy draw, one uniform per candidate, so the same seed and candidates give the same
    queries) at the image's location. Images without tags give no query; queries whose tag is carried
    by fewer than ``min_query_images`` candidates are dropped. Queries come in candidate order."""
    candidates._need_locations()
    n_tags = candidates.cand_ptr[1:] - candidates.cand_ptr[:-1]
    u = torch.from_numpy(np.random.default_rng(seed).random(candidates.num_candidates))
    has = n_tags > 0
    pick = candidates.cand_ptr[:-1] + (u * n_tags).long().clamp_max((n_tags - 1).clamp_min(0))
    cand = torch.nonzero(has).squeeze(1)
    tag = candidates.keys[pick[cand]] % candidates.num_tags
    keep = candidates.images_per_tag()[tag] >= min_query_images
    cand, tag = cand[keep], tag[keep]
    return LocationQueries(
        tag=tag, lat=candidates.lat[cand], lon=candidates.lon[cand], candidate=cand, row=candidates.rows[cand]
    )


def _first_k(retrieved: Tensor, k: int, num_candidates: int, source: Tensor | None) -> Tensor:
    """Validated first k retrieved ids ``[Q, k]``; with ``source``, the source candidate is skipped."""
    if retrieved.ndim != 2:
        raise ValueError(f"retrieved must be [Q, K] candidate ids, got shape {tuple(retrieved.shape)}")
    if retrieved.is_floating_point():
        raise ValueError("retrieved must hold integer candidate ids (rank scores first, e.g. with ranked_topk)")
    retrieved = retrieved.long()
    need = k + (source is not None)
    if retrieved.shape[1] < need:
        raise ValueError(
            f"retrieved has {retrieved.shape[1]} ids per query, need >= {need} (k={k}"
            f"{', plus one for the excluded query image' if source is not None else ''}); pad with -1"
        )
    if retrieved.numel() and (retrieved.min() < -1 or retrieved.max() >= num_candidates):
        raise ValueError(
            f"retrieved ids must lie in [-1, {num_candidates}), got [{int(retrieved.min())}, {int(retrieved.max())}]"
        )
    s = torch.sort(retrieved, dim=1).values
    if ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)).any():
        raise ValueError("a retrieved list contains the same candidate twice")
    if source is not None:
        if source.shape != (retrieved.shape[0],):
            raise ValueError(f"source must be [Q] = [{retrieved.shape[0]}], got {tuple(source.shape)}")
        drop = retrieved == source.to(retrieved.device).long()[:, None]
        order = torch.sort(drop.to(torch.int8), dim=1, stable=True).indices
        retrieved = retrieved.gather(1, order)
    return retrieved[:, :k]


def precision_at_k(
    retrieved: Tensor, query_tags: Tensor, candidates: RetrievalCandidates, k: int = 10, source: Tensor | None = None
) -> Tensor:
    """Location-agnostic P@k of each query, a float64 fraction ``[Q]``.

    ``retrieved [Q, K >= k]``: ranked candidate ids; ``query_tags [Q]``; ``source [Q]`` (candidate id
    of the query image) only to exclude it from the ranking.

    >>> cands = RetrievalCandidates.from_padded(torch.tensor([[5, -1], [5, 7], [7, -1]]), num_tags=8)
    >>> precision_at_k(torch.tensor([[0, 2], [2, 1]]), torch.tensor([5, 7]), cands, k=2).tolist()
    [0.5, 1.0]
    """
    top = _first_k(retrieved, k, candidates.num_candidates, source).cpu()
    rel = candidates.carries(top, query_tags.cpu().long()[:, None])
    return rel.sum(1).double() / k


def location_sensitive_precision(
    retrieved: Tensor,
    queries: LocationQueries,
    candidates: RetrievalCandidates,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    k: int = 10,
    exclude_query_image: bool = False,
) -> Tensor:
    """Location-sensitive P@k of each query at each threshold, a float64 fraction ``[Q, len(thresholds)]``."""
    candidates._need_locations()
    top = _first_k(retrieved, k, candidates.num_candidates, queries.candidate if exclude_query_image else None).cpu()
    carries = candidates.carries(top, queries.tag.cpu()[:, None])
    safe = top.clamp_min(0)
    dist = geodesic_km_torch(
        queries.lat.cpu()[:, None], queries.lon.cpu()[:, None], candidates.lat[safe], candidates.lon[safe]
    )
    d = torch.tensor([float(t) for t in thresholds_km], dtype=torch.float64)
    rel = carries[:, :, None] & (dist[:, :, None] <= d)
    return rel.sum(1).double() / k


def location_sensitive_upper_bound(
    queries: LocationQueries,
    candidates: RetrievalCandidates,
    thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
    k: int = 10,
    exclude_query_image: bool = False,
    chunk_pairs: int = 1 << 22,
) -> Tensor:
    """Best possible P@k per query and threshold, float64 ``[Q, len(thresholds)]``: the candidates that
    carry the tag ranked by distance to the query, i.e. ``min(#carrying within D, k) / k``.

    Exact: every (query, carrying candidate) distance is computed, in chunks of about
    ``chunk_pairs`` pairs (memory bound), total work = sum over queries of the tag's image count."""
    candidates._need_locations()
    d = torch.tensor([float(t) for t in thresholds_km], dtype=torch.float64)
    tag = queries.tag.cpu().long()
    start, length = candidates.tag_ptr[tag], candidates.tag_ptr[tag + 1] - candidates.tag_ptr[tag]
    out = torch.zeros((len(tag), len(d)), dtype=torch.float64)
    cum = torch.cumsum(length, 0)
    q0 = 0
    while q0 < len(tag):
        base = int(cum[q0 - 1]) if q0 else 0
        q1 = max(int(torch.searchsorted(cum, base + chunk_pairs, right=True)), q0 + 1)
        q1 = min(q1, len(tag))
        ln = length[q0:q1]
        qi = torch.repeat_interleave(torch.arange(q0, q1), ln)
        offset = torch.arange(int(ln.sum())) - torch.repeat_interleave(torch.cumsum(ln, 0) - ln, ln)
        cand = candidates.tag_candidates[start[qi] + offset]
        dist = geodesic_km_torch(queries.lat[qi], queries.lon[qi], candidates.lat[cand], candidates.lon[cand])
        within = (dist[:, None] <= d).double()
        if exclude_query_image:
            within[cand == queries.candidate[qi]] = 0.0
        out.index_add_(0, qi, within)
        q0 = q1
    return out.clamp_max(k) / k


def precision_table(per_query: Tensor, thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM) -> dict[str, float]:
    """Mean over queries in percent, keyed by :func:`threshold_key` (``"inf"``, ``"2500km"``, ...)."""
    mean = per_query.mean(0) if len(per_query) else torch.full((len(thresholds_km),), float("nan"), dtype=torch.float64)
    return {threshold_key(t): 100.0 * float(m) for t, m in zip(thresholds_km, mean)}


class RetrievalPrecision(Metric):
    """Location-agnostic P@k (percent) over queries: ``update(retrieved, query_tags, source=None)``.

    States: relevant images among the first k over all queries and the query count, integers reduced
    by sum, so any split of the queries (DDP, shards, batches) merges to exactly the same number."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, candidates: RetrievalCandidates, k: int = 10, exclude_query_image: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.candidates, self.k, self.exclude_query_image = candidates, int(k), exclude_query_image
        self.add_state("relevant", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, retrieved: Tensor, query_tags: Tensor, source: Tensor | None = None) -> None:
        if self.exclude_query_image and source is None:
            raise ValueError("exclude_query_image=True needs source (the query image's candidate id) in update()")
        p = precision_at_k(retrieved, query_tags, self.candidates, self.k, source if self.exclude_query_image else None)
        self.relevant += torch.round(p * self.k).long().sum().to(self.device)  # p = relevant / k exactly
        self.count += len(p)

    def compute(self) -> float:
        n = int(self.count)
        return 100.0 * int(self.relevant) / (self.k * n) if n else float("nan")


class LocationSensitivePrecision(Metric):
    """Location-sensitive P@k (percent) per distance threshold: ``update(retrieved, queries)`` with a
    :class:`LocationQueries` batch; ``compute()`` -> ``{"inf": .., "2500km": .., ...}``.

    States: per-threshold relevant images among the first k over all queries and the query count,
    integers reduced by sum (exact under any split of the queries)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        candidates: RetrievalCandidates,
        thresholds_km: Sequence[float] = DEFAULT_THRESHOLDS_KM,
        k: int = 10,
        exclude_query_image: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        candidates._need_locations()
        self.candidates, self.k, self.exclude_query_image = candidates, int(k), exclude_query_image
        self.thresholds_km = tuple(float(t) for t in thresholds_km)
        self.add_state("relevant", default=torch.zeros(len(self.thresholds_km), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, retrieved: Tensor, queries: LocationQueries) -> None:
        p = location_sensitive_precision(
            retrieved, queries, self.candidates, self.thresholds_km, self.k, self.exclude_query_image
        )
        self.relevant += torch.round(p * self.k).long().sum(0).to(self.device)
        self.count += len(p)

    def compute(self) -> dict[str, float]:
        n = int(self.count)
        return {
            threshold_key(t): (100.0 * int(r) / (self.k * n) if n else float("nan"))
            for t, r in zip(self.thresholds_km, self.relevant)
        }
