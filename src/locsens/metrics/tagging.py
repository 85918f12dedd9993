"""Image tagging metrics: A@k, %pred and %cpred (paper's "Evaluation protocol"), with "places omitted".

Inputs
------
``preds`` is either
  * full scores, a floating tensor ``[N, V]`` (any sign; higher = better), ranked here by
    :func:`ranked_topk`, or
  * a precomputed ranking, an integer tensor ``[N, Kmax]`` of tag ids, best first, ``-1`` padding
    at the end (what the evaluation keeps at V = 100k: the top-50 computed on the fly with
    :func:`ranked_topk`).
``target`` is the ground truth: a LongTensor ``[N, T]`` of the image's vocabulary tag ids, ``-1``
padding, duplicates allowed (build it with :func:`ground_truth_from_csr`).

Definitions (all in percent)
----------------------------
* ``A@k``: share of evaluated images for which at least one of the top-k ranked tags is in the
  ground truth.
* ``%pred``: distinct top-1 tags / distinct test tags; ``%cpred``: distinct top-1 tags that were
  correct for at least one image / distinct test tags. "Test tags" are the tags occurring in the
  ground truth of the evaluated images. ``%pred`` is the paper's ratio taken literally, so it can
  exceed 100 when a method predicts many tags that never occur in the test ground truth.

Tie rule: equal scores are ranked by ascending tag id (= descending training frequency, the
vocabulary being frequency-ordered), deterministically; NaN scores are rejected.

Places omitted (supplementary Table 2): ``exclude`` is a bool mask ``[V]`` (see
:func:`place_name_mask`). Excluded tags are removed from the ground truth AND from the ranking
(the remaining tags move up, so top-k means the k best non-excluded tags). Images whose ground
truth is empty (after exclusion, or from the start) are not evaluated at all: they leave the A@k
denominator and contribute nothing to %pred / %cpred; their number is reported as ``n_dropped``
(an image with no gradable tag cannot be hit, and keeping it would measure how many images are
tagged only with place names rather than the tagger).

With a precomputed ranking and ``exclude``, the ranking may run short of ``max(ks)`` non-excluded
tags; such images are counted in ``n_short`` and their A@k is a lower bound. Rank from full scores
with ``ranked_topk(scores, k, exclude=...)`` to avoid that.

Memory: a batch compares every ranked id with every ground-truth id (``N * max(ks) * T`` bools),
so feed the metric in batches of a few thousand images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from locsens.data.tagsets import padded

DEFAULT_KS = (1, 10, 50)


def ranked_topk(scores: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
    """The ``k`` best tag ids of each row of ``scores [N, V]``, best first, as LongTensor ``[N, k']``.

    ``k' = min(k, number of non-excluded tags)``. Ties go to the lower tag id, exactly (not left to
    ``torch.topk``'s unspecified tie order): ``torch.topk`` picks the k+1 best; a row whose
    (k+1)-th best equals its k-th best (a tie across the cut) is redone exactly -- every strictly
    better entry kept, the tied ones filled in ascending id order. The kept entries are then
    ordered by descending score, equal scores by ascending id. Vectorised; the common no-tie case
    costs one ``torch.topk``. Scores of any sign (and +-inf) are fine.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, V], got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating tensor, got {scores.dtype}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; a ranking over NaN is undefined")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    keep_ids = None
    if exclude is not None:
        exclude = _check_mask(exclude, scores.shape[1]).to(scores.device)
        keep_ids = torch.nonzero(~exclude).squeeze(1)
        scores = scores[:, keep_ids]
    n, v = scores.shape
    k = min(k, v)
    if k == 0 or n == 0:
        return torch.zeros((n, k), dtype=torch.long, device=scores.device)
    vals, ids = torch.topk(scores, min(k + 1, v), dim=1)
    if k < v:  # the (k+1)-th best equals the k-th: a tie across the cut, topk's choice is arbitrary
        cut_tie = vals[:, k] == vals[:, k - 1]
        vals, ids = vals[:, :k], ids[:, :k].clone()
        if cut_tie.any():
            ids[cut_tie] = _exact_topk_set(scores[cut_tie], vals[cut_tie, -1:], k)
    ids = torch.sort(ids, dim=1).values  # ascending id, then a stable sort by descending score
    order = torch.sort(scores.gather(1, ids), dim=1, descending=True, stable=True).indices
    ids = ids.gather(1, order)
    return ids if keep_ids is None else keep_ids[ids]


def _exact_topk_set(scores: Tensor, kth: Tensor, k: int) -> Tensor:
    """Ids ``[n, k]`` (ascending) of the entries better than ``kth`` plus the lowest-id ties at ``kth``."""
    above = scores > kth
    at = scores == kth
    n_missing = k - above.sum(1, keepdim=True)
    chosen = above | (at & (torch.cumsum(at, dim=1) <= n_missing))
    return torch.nonzero(chosen)[:, 1].view(len(scores), k)  # row-major: ascending id within each row


def drop_excluded(ranked: Tensor, exclude: Tensor) -> Tensor:
    """Remove excluded ids from a ranking ``[N, K]`` (``-1`` padded), shifting the rest up; same shape."""
    exclude = _check_mask(exclude, exclude.shape[0]).to(ranked.device)
    valid = ranked >= 0
    dropped = ~valid | exclude[ranked.clamp_min(0)]
    order = torch.sort(dropped.to(torch.int8), dim=1, stable=True).indices
    ranked = ranked.gather(1, order)
    return ranked.masked_fill(dropped.gather(1, order), -1)


def ground_truth_from_csr(indptr, indices, rows) -> Tensor:
    """Padded ground truth ``[len(rows), T]`` (``-1`` padding, T = most tags of any row) from a CSR
    tag matrix (e.g. ``DatasetStore.tags_indptr`` / ``tags_indices``) restricted to ``rows``."""
    return torch.from_numpy(padded(indptr, indices, rows))


def place_name_mask(vocab: Sequence[str], place_names: Iterable[str]) -> Tensor:
    """Bool mask ``[V]``: vocabulary tags that are place names (continents, countries, regions, towns).

    ``place_names`` must already be normalised like tags (``DatasetStore.place_names`` is)."""
    names = set(place_names)
    return torch.tensor([t in names for t in vocab], dtype=torch.bool)


def _check_mask(mask: Tensor, num_tags: int) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.shape != (num_tags,):
        raise ValueError(f"exclude must be a bool mask of shape ({num_tags},), got {mask.dtype} {tuple(mask.shape)}")
    return mask


def _ranking(preds: Tensor, num_tags: int, max_k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """Ranked ids ``[N, K]`` (-1 padded) and the per-image "ranking ran short" flag."""
    if preds.ndim != 2:
        raise ValueError(f"preds must be [N, V] scores or [N, Kmax] tag ids, got shape {tuple(preds.shape)}")
    n_available = num_tags - (int(exclude.sum()) if exclude is not None else 0)
    want = min(max_k, n_available)
    if preds.is_floating_point():
        if preds.shape[1] != num_tags:
            raise ValueError(f"scores have {preds.shape[1]} columns, expected num_tags={num_tags}")
        ranked = ranked_topk(preds, max_k, exclude)
        return ranked, torch.zeros(len(preds), dtype=torch.bool, device=preds.device)
    ranked = preds.long()
    if ranked.numel() and (ranked.min() < -1 or ranked.max() >= num_tags):
        raise ValueError(f"ranked tag ids must lie in [-1, {num_tags}), got [{int(ranked.min())}, {int(ranked.max())}]")
    if ranked.shape[1] < want:
        raise ValueError(f"preds ranks only {ranked.shape[1]} tags per image but ks asks for top-{max_k}; keep more")
    if exclude is not None:
        ranked = drop_excluded(ranked, exclude)
    short = (ranked[:, :max_k] >= 0).sum(1) < want
    return ranked, short


def tagging_counts(
    preds: Tensor, target: Tensor, num_tags: int, ks: Sequence[int] = DEFAULT_KS, exclude: Tensor | None = None
) -> dict[str, Tensor]:
    """Additive sufficient statistics of one batch (the states of :class:`TaggingAccuracy`).

    Returns ``hits [len(ks)]`` (images hit within top-k), ``n`` (evaluated images), ``n_dropped``,
    ``n_short``, and tag-count vectors ``[V]``: ``pred_top1``, ``correct_top1``, ``test_tags``.
    Summing these over batches (or ranks) and calling :func:`tagging_from_counts` gives the metric.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if target.ndim != 2 or target.shape[0] != preds.shape[0]:
        raise ValueError(f"target must be [N, T] with N = {preds.shape[0]}, got shape {tuple(target.shape)}")
    target = target.to(preds.device).long()
    if target.numel() and (target.min() < -1 or target.max() >= num_tags):
        raise ValueError(f"target tag ids must lie in [-1, {num_tags}), got [{int(target.min())}, {int(target.max())}]")
    if exclude is not None:
        exclude = _check_mask(exclude, num_tags).to(preds.device)
        target = target.masked_fill((target >= 0) & exclude[target.clamp_min(0)], -1)
    max_k = max(ks)
    ranked, short = _ranking(preds, num_tags, max_k, exclude)
    ranked = ranked[:, :max_k]

    has_truth = (target >= 0).any(1)
    ranked, target, short = ranked[has_truth], target[has_truth], short[has_truth]
    # hit[i, j]: the j-th ranked tag of image i is in its ground truth
    hit = ((ranked[:, :, None] == target[:, None, :]) & (ranked >= 0)[:, :, None]).any(2)
    no_hit = torch.full((len(hit),), max_k, dtype=torch.long, device=hit.device)
    first_hit = torch.where(hit.any(1), hit.to(torch.int8).argmax(1), no_hit) if hit.shape[1] else no_hit
    hits = torch.stack([(first_hit < k).sum() for k in ks])

    def tag_count(ids: Tensor) -> Tensor:
        ids = ids[ids >= 0]
        return torch.bincount(ids, minlength=num_tags)

    top1 = ranked[:, 0] if ranked.shape[1] else torch.full((len(ranked),), -1, dtype=torch.long, device=ranked.device)
    return {
        "hits": hits,
        "n": torch.tensor(len(ranked), device=preds.device),
        "n_dropped": torch.tensor(int((~has_truth).sum()), device=preds.device),
        "n_short": short.sum(),
        "pred_top1": tag_count(top1),
        "correct_top1": tag_count(top1[hit[:, 0]] if hit.shape[1] else top1[:0]),
        "test_tags": tag_count(target.flatten()),
    }


def tagging_from_counts(counts: dict[str, Tensor], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Turn summed :func:`tagging_counts` into ``{"A@k": %, "%pred": %, "%cpred": %, "n", "n_dropped", "n_short"}``."""
    n = int(counts["n"])
    n_test = int((counts["test_tags"] > 0).sum())
    out = {f"A@{k}": (100.0 * float(counts["hits"][i]) / n if n else float("nan")) for i, k in enumerate(ks)}
    out["%pred"] = 100.0 * int((counts["pred_top1"] > 0).sum()) / n_test if n_test else float("nan")
    out["%cpred"] = 100.0 * int((counts["correct_top1"] > 0).sum()) / n_test if n_test else float("nan")
    out["n"] = n
    out["n_dropped"] = int(counts["n_dropped"])
    out["n_short"] = int(counts["n_short"])
    return out


def tagging_accuracy(
    preds: Tensor,
    target: Tensor,
    num_tags: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    exclude: Tensor | None = None,
) -> dict[str, float]:
    """A@k, %pred and %cpred (percent) of one set of images; see the module docstring.

    ``num_tags`` defaults to ``preds.shape[1]`` for score inputs and is required for ranked ids.

    >>> ranked = torch.tensor([[3, 1, 2], [0, 2, 1]])          # two images, tags best first
    >>> target = torch.tensor([[1, -1], [2, 0]])               # their true tags, -1 padded
    >>> r = tagging_accuracy(ranked, target, num_tags=4, ks=(1, 2))
    >>> r["A@1"], r["A@2"]                                     # image 2's top tag is right; image 1's 2nd
    (50.0, 100.0)
    """
    if num_tags is None:
        if not preds.is_floating_point():
            raise ValueError("num_tags is required when preds are ranked tag ids")
        num_tags = preds.shape[1]
    return tagging_from_counts(tagging_counts(preds, target, num_tags, ks, exclude), ks)


class TaggingAccuracy(Metric):
    """torchmetrics wrapper of :func:`tagging_accuracy`: ``update(preds, target)`` per batch,
    ``compute()`` -> the same dict. Every state is a count reduced by sum, so it is exact under DDP
    and ``merge_state``; tag indicators are counts ``[V]`` read as ``> 0``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_tags: int, ks: Sequence[int] = DEFAULT_KS, exclude: Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_tags = int(num_tags)
        self.ks = tuple(int(k) for k in ks)
        self.exclude = None if exclude is None else _check_mask(exclude, self.num_tags)
        self.add_state("hits", default=torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        for name in ("n", "n_dropped", "n_short"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("pred_top1", "correct_top1", "test_tags"):
            self.add_state(name, default=torch.zeros(self.num_tags, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        counts = tagging_counts(preds, target, self.num_tags, self.ks, self.exclude)
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value.to(self.device))

    def compute(self) -> dict[str, float]:
        return tagging_from_counts(
            {
                name: getattr(self, name)
                for name in ("hits", "n", "n_dropped", "n_short", "pred_top1", "correct_top1", "test_tags")
            },
            self.ks,
        )
