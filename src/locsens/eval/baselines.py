"""Location-frequency tagging baselines and the product-of-experts combination with a visual model.

:class:`FrequencyTagger` predicts, for a test image, the most frequent TRAINING tags of the image's
place (town, country, ... or the whole training set: "global frequency"), as the supplementary
material's Country / Town Frequency baselines. Frequency = number of training images carrying the
tag (an image's duplicate tags count once); ties go to the lower tag id (the vocabulary is
frequency-ordered, so the globally more frequent tag wins).

Fallback: a place never seen in training, with an unknown id (< 0), or with fewer than k distinct
training tags, is completed from the next coarser level, and so on down to the global ranking:
``town -> country -> continent -> global`` (``DEFAULT_FALLBACK``; the region level is skipped as
agreed for issue 5), each level only adding tags not already listed, so the list always has
``min(k, V)`` entries.

:func:`product_of_experts` is the simplest way to use location with a visual model:
``log p_visual(t | image) + weight * log p(t | place)`` with the smoothed prior of
:meth:`FrequencyTagger.prior`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from locsens.data.store import DatasetStore
from locsens.data.tagsets import TagSets

LEVELS = ("town", "region", "country", "continent", "global")
DEFAULT_FALLBACK = {
    "town": ("town", "country", "continent"),
    "region": ("region", "country", "continent"),
    "country": ("country", "continent"),
    "continent": ("continent",),
    "global": (),
}


class _PlaceRanking:
    """Tag counts of one place level, sparse: for each place, its tags by descending count."""

    def __init__(self, place: np.ndarray, tag: np.ndarray, num_places: int, num_tags: int):
        sets = TagSets.from_pairs(place, tag, num_places, num_tags, count=True)
        keys, counts = sets.keys.numpy(), sets.counts.numpy()
        p, t = keys // num_tags, keys % num_tags
        order = np.lexsort((t, -counts, p))  # by place, then count descending, then tag id
        self.tags = t[order]
        self.counts = counts[order]
        self.ptr = np.searchsorted(p[order], np.arange(num_places + 1))

    def without(self, exclude: np.ndarray) -> _PlaceRanking:
        """The same ranking with the tags of the bool mask ``exclude`` [V] removed."""
        keep = ~exclude[self.tags]
        out = object.__new__(_PlaceRanking)
        out.tags, out.counts = self.tags[keep], self.counts[keep]
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        out.ptr = kept_before[self.ptr]
        return out

    def segments(self, place: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and length of each place's ranked segment (length 0 for unknown or unseen places)."""
        known = (place >= 0) & (place < len(self.ptr) - 1)
        p = np.where(known, place, 0)
        return self.ptr[p], np.where(known, self.ptr[p + 1] - self.ptr[p], 0)


class FrequencyTagger:
    """Most frequent training tags of an image's place, with coarser-level fallback (module docstring).

    ``FrequencyTagger(dataset, "town").fit().topk(test_rows, k=50)``; ``level`` is one of
    ``LEVELS``; ``fallback`` overrides the chain of place levels tried before the global ranking.
    ``alpha`` is the prior's smoothing strength in pseudo-images (see :meth:`prior`).
    """

    def __init__(
        self, dataset: DatasetStore, level: str = "town", fallback: Sequence[str] | None = None, alpha: float = 10.0
    ):
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
        self.dataset = dataset
        self.level = level
        self.chain = tuple(DEFAULT_FALLBACK[level] if fallback is None else fallback)
        for lvl in self.chain:
            if lvl not in dataset.place_index:
                raise ValueError(f"{dataset.path}: no place level {lvl!r} (has {tuple(dataset.place_index)})")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.num_tags = dataset.num_tags
        self.rankings: dict[str, _PlaceRanking] | None = None

    def fit(self) -> FrequencyTagger:
        """Count tags per place on the training split (sparse: memory ~ distinct (place, tag) pairs)."""
        ds, v = self.dataset, self.num_tags
        train = ds.split_rows("train")
        length = ds.tags_indptr[train + 1] - ds.tags_indptr[train]
        row = np.repeat(train, length)
        offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
        tag = ds.tags_indices[ds.tags_indptr[row] + offset].astype(np.int64)
        pairs = np.unique(row.astype(np.int64) * v + tag)  # one count per (image, tag)
        row, tag = pairs // v, pairs % v
        self.global_count = np.bincount(tag, minlength=v)
        self.global_ranking = np.lexsort((np.arange(v), -self.global_count))
        self.rankings = {}
        for lvl in self.chain:
            place = ds.place_index[lvl][row].astype(np.int64)
            known = place >= 0
            self.rankings[lvl] = _PlaceRanking(place[known], tag[known], len(ds.places[lvl]), v)
        return self

    def _combos(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Distinct place-id tuples (one column per chain level) of ``rows`` and each row's tuple."""
        if self.rankings is None:
            raise RuntimeError("call fit() before topk() or prior()")
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.dataset)):
            raise IndexError(f"rows must lie in [0, {len(self.dataset)}) of {self.dataset.path}")
        ids = (
            np.stack([self.dataset.place_index[lvl][rows].astype(np.int64) for lvl in self.chain], 1)
            if self.chain
            else np.zeros((len(rows), 0), np.int64)
        )
        combos, inverse = np.unique(ids, axis=0, return_inverse=True)
        return combos, inverse.reshape(-1)

    def topk(self, rows, k: int = 50, exclude: Tensor | None = None) -> Tensor:
        """Ranked tag ids LongTensor ``[len(rows), min(k, V')]`` for dataset ``rows``, best first, among
        the V' tags not in the bool mask ``exclude [V]`` (places omitted; padded with -1 if V' < k)."""
        combos, inverse = self._combos(rows)  # checks fit() ran
        rankings, global_ranking = self.rankings, self.global_ranking
        if exclude is not None:
            rankings, global_ranking = self._without(exclude)
        k = min(int(k), self.num_tags)
        u = len(combos)
        parts = []
        for j, lvl in enumerate(self.chain):  # finest first: its tags lead the list
            start, length = rankings[lvl].segments(combos[:, j])
            pos = np.arange(k)
            inside = pos[None, :] < length[:, None]
            idx = np.where(inside, start[:, None] + pos[None, :], 0)
            parts.append(np.where(inside, rankings[lvl].tags[idx] if len(rankings[lvl].tags) else -1, -1))
        fill = np.full(k, -1, dtype=np.int64)
        fill[: min(k, len(global_ranking))] = global_ranking[:k]
        parts.append(np.broadcast_to(fill, (u, k)))  # k distinct tags (or all V'): the list fills
        cand = np.concatenate(parts, 1)
        keys = np.where(cand >= 0, np.arange(u)[:, None] * self.num_tags + cand, -1).reshape(-1)
        first = np.zeros(keys.shape, bool)
        _, first_pos = np.unique(keys, return_index=True)  # np.unique keeps the first occurrence's index
        first[first_pos] = True
        first &= keys >= 0
        first = first.reshape(cand.shape)
        order = np.argsort(~first, axis=1, kind="stable")[:, :k]
        ranked = np.where(np.take_along_axis(first, order, 1), np.take_along_axis(cand, order, 1), -1)
        return torch.from_numpy(np.ascontiguousarray(ranked[inverse])).long()

    def _without(self, exclude: Tensor) -> tuple[dict, np.ndarray]:
        """The rankings without the tags of ``exclude`` (cached for the last mask: places omitted)."""
        mask = np.asarray(torch.as_tensor(exclude), dtype=bool)
        key = hash(mask.tobytes())
        cached = getattr(self, "_excluded", None)
        if cached is None or cached[0] != key:
            rankings = {lvl: r.without(mask) for lvl, r in self.rankings.items()}
            cached = self._excluded = (key, rankings, self.global_ranking[~mask[self.global_ranking]])
        return cached[1], cached[2]

    def prior(self, rows) -> Tensor:
        """Smoothed tag distribution given the place, FloatTensor ``[len(rows), V]`` (rows sum to 1).

        Hierarchical Dirichlet backoff: ``p_global(t) = (c(t) + 1) / (sum c + V)`` and, from the
        coarsest chain level to the finest, ``p(t | place) = (c_place(t) + alpha p_parent(t)) /
        (n_place + alpha)`` with ``n_place`` the place's tag count; an unseen place inherits its
        parent. Strictly positive, so ``log`` is finite. Unrolled, ``p = sum_l w_l c_l / (n_l + alpha)
        + w_global p_global`` with ``w`` the product of the finer levels' ``alpha / (n + alpha)``: only
        the sparse counts are scattered, the one dense array is the float32 output ``[len(rows), V]``
        (plus one per distinct place tuple) -- chunk ``rows`` (a few hundred at V = 100k).
        """
        combos, inverse = self._combos(rows)
        u, v = len(combos), self.num_tags
        out = np.zeros((u, v), np.float32)
        weight = np.ones(u)
        for j, lvl in enumerate(self.chain):  # finest first
            r = self.rankings[lvl]
            start, length = r.segments(combos[:, j])
            which = np.repeat(np.arange(u), length)
            entry = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length) + np.repeat(start, length)
            n_place = np.bincount(which, weights=r.counts[entry], minlength=u)
            out[which, r.tags[entry]] += (weight / (n_place + self.alpha))[which] * r.counts[entry]
            weight *= self.alpha / (n_place + self.alpha)
        p_global = ((self.global_count + 1.0) / (self.global_count.sum() + v)).astype(np.float32)
        out += weight.astype(np.float32)[:, None] * p_global[None, :]
        return torch.from_numpy(out[inverse])
