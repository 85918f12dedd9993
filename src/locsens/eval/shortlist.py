"""Shortlist and rerank (the paper's "future work"): cheap, exact candidate lists that LocSens reranks.

Exhaustive LocSens scoring costs V pairs per tagged image and N pairs per retrieval query. A cascade
scores only a shortlist per query, built from signals that are cheap and never look at the ground truth:

* **Tagging** (:class:`TagShortlist`): the agnostic model's top-K tags for the image (the similarity of
  the embeddings store LocSens was trained on: one matmul over the vocabulary) united with the top-P tags
  of the image's place prior (training-split tag frequency by town, then region, country, continent and
  globally: the place names and local tags an agnostic model cannot rank).
* **Retrieval** (:class:`ImageShortlist`): the agnostic model's top-K candidate images for the tag united
  with the K' candidates nearest the query location (an exact k-nearest search on the sphere: scipy's
  cKDTree over unit vectors, where the nearest chord is the nearest great circle).

LocSens then scores each union exactly (``ScoringEngine.score_tags(candidates=...)`` /
``score_images(shortlist=...)``). Excluded tags (places omitted) are removed from the shortlist before
it is cut, so every slot goes to a tag that can be returned. Lists are ``[B, C]`` LongTensors of ids,
``-1`` padded (a union is shorter where its two parts overlap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from locsens.data.store import DatasetStore
from locsens.geo import unit_vectors

PRIOR_LEVELS = ("town", "region", "country", "continent")  # finest first; then the global ranking


def union(*lists: torch.Tensor) -> torch.Tensor:
    """Row-wise union of id lists ``[B, C_i]`` (``-1`` = none): ``[B, sum C_i]`` distinct ids, ascending,
    then ``-1`` padding."""
    ids = torch.cat([torch.as_tensor(x).long() for x in lists], dim=1)
    ids = torch.sort(ids.masked_fill(ids < 0, torch.iinfo(torch.long).max), dim=1).values
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    ids = ids.masked_fill(repeat | (ids == torch.iinfo(torch.long).max), -1)
    order = torch.sort((ids < 0).to(torch.int8), dim=1, stable=True).indices  # padding last
    return ids.gather(1, order)


def _agnostic_embeddings(image: torch.Tensor, tag: torch.Tensor, similarity: str):
    if similarity == "cosine":
        return F.normalize(image.float(), dim=-1), F.normalize(tag.float(), dim=-1)
    if similarity == "dot":
        return image.float(), tag.float()
    raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")


class TagShortlist:
    """Per test image: the agnostic top-``agnostic`` tags united with the place prior's top-``prior``.

    Args:
        dataset: the dataset store (the prior counts its training split).
        image, tag: the agnostic embeddings ``[N, E]`` (every dataset row) and ``[V, E]``.
        similarity: ``"cosine"`` (MCC, HER) or ``"dot"`` (MLC), as the embeddings store says.
        agnostic, prior: K and P (either may be 0, not both).
    """

    def __init__(
        self,
        dataset: DatasetStore,
        image: torch.Tensor,
        tag: torch.Tensor,
        similarity: str,
        agnostic: int,
        prior: int,
    ):
        if agnostic < 0 or prior < 0 or agnostic + prior == 0:
            raise ValueError(f"tag shortlist sizes agnostic={agnostic}, prior={prior}: both >= 0, at least one > 0")
        self.image, self.tag = _agnostic_embeddings(image, tag, similarity)
        self.agnostic, self.prior = int(agnostic), int(prior)
        self.num_tags = self.tag.shape[0]
        self.frequency = None
        if self.prior:
            from locsens.eval.baselines import FrequencyTagger

            levels = [lvl for lvl in PRIOR_LEVELS if lvl in dataset.place_index]
            self.frequency = FrequencyTagger(dataset, level=levels[0] if levels else "global", fallback=levels).fit()

    @property
    def size(self) -> int:
        """The longest list this shortlist can return (K + P, at most V)."""
        return min(self.agnostic + self.prior, self.num_tags)

    def __call__(self, rows: np.ndarray, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Candidate tag ids ``[len(rows), C]`` (``-1`` padded) for dataset ``rows``, without the tags of
        the bool mask ``exclude [V]``."""
        r = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        parts = []
        if self.agnostic:
            scores = self.image[r] @ self.tag.T
            if exclude is not None:
                scores = scores.masked_fill(exclude[None, :], -torch.inf)
            vals, ids = torch.topk(scores, min(self.agnostic, self.num_tags), dim=1)
            parts.append(ids.masked_fill(torch.isneginf(vals), -1))
        if self.prior:
            parts.append(self.frequency.topk(np.asarray(rows), self.prior, exclude=exclude))
        return union(*parts)


class ImageShortlist:
    """Per (tag, location) query: the agnostic top-``agnostic`` candidate images for the tag united with
    the ``nearest`` candidates closest to the query location (positions in the candidate set).

    Args:
        image: the agnostic embeddings of the candidate images ``[N, E]`` (in candidate order).
        tag: the agnostic tag embeddings ``[V, E]``.
        lat, lon: the candidates' locations (degrees) ``[N]``.
        similarity: ``"cosine"`` or ``"dot"``.
        agnostic, nearest: K and K' (either may be 0, not both).
    """

    def __init__(self, image, tag, lat, lon, similarity: str, agnostic: int, nearest: int):
        if agnostic < 0 or nearest < 0 or agnostic + nearest == 0:
            raise ValueError(
                f"image shortlist sizes agnostic={agnostic}, nearest={nearest}: both >= 0, at least one > 0"
            )
        self.image, self.tag = _agnostic_embeddings(torch.as_tensor(image), torch.as_tensor(tag), similarity)
        self.num_candidates = self.image.shape[0]
        self.agnostic = min(int(agnostic), self.num_candidates)
        self.nearest = min(int(nearest), self.num_candidates)
        self.tree = cKDTree(unit_vectors(np.asarray(lat), np.asarray(lon))) if self.nearest else None

    @property
    def size(self) -> int:
        return min(self.agnostic + self.nearest, self.num_candidates)

    def __call__(self, tag_ids, lat, lon) -> torch.Tensor:
        """Candidate positions ``[Q, C]`` (``-1`` padded) for queries (tag ids ``[Q]``, degrees ``[Q]``)."""
        tag_ids = torch.as_tensor(tag_ids).long()
        parts = []
        if self.agnostic:
            uniq, inverse = torch.unique(tag_ids, return_inverse=True)  # one list per distinct tag
            top = torch.cat(
                [torch.topk(self.tag[u] @ self.image.T, self.agnostic, dim=1).indices for u in torch.split(uniq, 1024)]
            )
            parts.append(top[inverse])
        if self.nearest:
            points = unit_vectors(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64))
            _, near = self.tree.query(points.reshape(-1, 3), k=self.nearest)
            parts.append(torch.from_numpy(np.asarray(near).reshape(len(tag_ids), self.nearest)).long())
        return union(*parts)


__all__ = ["PRIOR_LEVELS", "ImageShortlist", "TagShortlist", "union"]
