"""The methods the evaluation compares, behind two small interfaces.

Tagging: ``method.rank_tags(rows, k, exclude=None) -> LongTensor [len(rows), k]``: the k best tag ids
for dataset rows (test images), best first, with the tags in the bool mask ``exclude`` [V] removed
(places omitted). Score-based methods also expose ``tag_scores(rows) -> FloatTensor [len(rows), V]``.
Retrieval: ``method.retrieve(tag_ids, lat, lon, candidate_rows, k) -> LongTensor [Q, k]`` of
candidate positions (indices into ``candidate_rows``), best first. Location-agnostic methods ignore
lat/lon and return the same list for a tag wherever the query is (as in the paper).

Every method is built from plain config values by :func:`build_method`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from locsens.artifacts import file_ref, require_made_from
from locsens.data.store import DatasetStore, EmbeddingStore
from locsens.metrics.tagging import drop_excluded, ranked_topk


class ScoreRanking:
    """Tagging by full scores: rank ``tag_scores`` (ties to the lower id), place names masked when asked."""

    def rank_tags(self, rows: np.ndarray, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        return ranked_topk(self.tag_scores(rows), k, exclude=exclude)


class EmbeddingMethod(ScoreRanking):
    """MLC / MCC / HER from their exported embedding store: score = similarity(image, tag).

    ``similarity == "cosine"`` (MCC, HER): both sides L2-normalised (a zero tag row, e.g. a HER tag
    without a word vector, scores 0 and ranks after every positively similar tag).
    ``similarity == "dot"`` (MLC): image = [features, 1], tag = [W, b], so the score is MLC's logit.
    """

    location_aware = False

    def __init__(self, name: str, dataset: DatasetStore, path: str):
        self.name = name
        self.store = EmbeddingStore(path, dataset)
        require_made_from(
            f"embeddings store {path}",
            self.store.made_from.get("dataset"),
            "dataset store",
            {"id": dataset.content_id, "path": str(dataset.path)},
            "re-export it from a model trained on this dataset store (`python export.py checkpoint=...`)",
        )
        self.lineage = {
            "embeddings": {"id": self.store.content_id, "path": str(path)},
            "checkpoint": self.store.made_from.get("checkpoint"),
        }
        image, tag = torch.from_numpy(self.store.image), torch.from_numpy(self.store.tag)
        if self.store.similarity == "cosine":
            image, tag = F.normalize(image, dim=-1), F.normalize(tag, dim=-1)
        self.image, self.tag = image, tag

    def tag_scores(self, rows: np.ndarray) -> torch.Tensor:
        return self.image[torch.as_tensor(rows)] @ self.tag.T

    def retrieve(self, tag_ids, lat, lon, candidate_rows, k: int) -> torch.Tensor:
        cand = self.image[torch.as_tensor(candidate_rows)]
        uniq, inverse = torch.unique(torch.as_tensor(tag_ids), return_inverse=True)
        out = []
        for chunk in torch.split(uniq, 1024):  # per distinct tag: the same list wherever the query is
            s = self.tag[chunk] @ cand.T
            out.append(ranked_topk(s, k))
        return torch.cat(out)[inverse]


class FrequencyMethod:
    """Global / country / town tag frequency on the training split, coarser levels as fallback.

    The ranking is "tags of the town by town frequency, then the remaining tags of the country by
    country frequency, then continent, then the rest by global frequency" (locsens.eval.baselines).
    """

    location_aware = True

    def __init__(self, name: str, dataset: DatasetStore, level: str):
        from locsens.eval.baselines import FrequencyTagger

        self.name = name
        self.tagger = FrequencyTagger(dataset, level=level)
        self.tagger.fit()

    def rank_tags(self, rows: np.ndarray, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        if exclude is None:
            return self.tagger.topk(rows, k)
        ranked = self.tagger.topk(rows, k + int(exclude.sum()))  # exact: enough to survive the exclusion
        return drop_excluded(ranked, exclude)[:, :k]


class ProductOfExperts(ScoreRanking):
    """A visual model's tag probabilities times a location tag prior: log p(t|img) + w log p(t|place).

    MCC scores are cosines; p(t|img) = softmax(cos / temperature) with the temperature chosen on the
    validation split (maximising A@10 of the product) from a small grid, so nothing is tuned on test.
    """

    location_aware = True

    def __init__(
        self,
        name: str,
        dataset: DatasetStore,
        visual: EmbeddingMethod,
        level: str,
        weight: float = 1.0,
        temperatures=(0.01, 0.02, 0.05, 0.1, 0.2),
        tune_rows: int = 2000,
        seed: int = 0,
    ):
        from locsens.eval.baselines import FrequencyTagger

        self.name, self.visual, self.weight = name, visual, weight
        self.lineage = visual.lineage
        self.prior = FrequencyTagger(dataset, level=level)
        self.prior.fit()
        val = dataset.split_rows("val")
        rng = np.random.default_rng(seed)
        val = np.sort(rng.choice(val, size=min(tune_rows, len(val)), replace=False)) if len(val) else val
        self.temperature = temperatures[0]
        if len(val):
            from locsens.metrics.tagging import ground_truth_from_csr, tagging_accuracy

            target = ground_truth_from_csr(dataset.tags_indptr, dataset.tags_indices, val)
            best = -1.0
            for t in temperatures:
                self.temperature = t
                a10 = tagging_accuracy(self.tag_scores(val), target, dataset.num_tags, ks=(10,))["A@10"]
                if a10 > best:
                    best, best_t = a10, t
            self.temperature = best_t

    def tag_scores(self, rows: np.ndarray) -> torch.Tensor:
        log_visual = torch.log_softmax(self.visual.tag_scores(rows) / self.temperature, dim=-1)
        return log_visual + self.weight * torch.log(self.prior.prior(rows))


class LocSensMethod(ScoreRanking):
    """A trained LocSens checkpoint scored exhaustively with the exact scoring engine."""

    location_aware = True

    def __init__(self, name: str, dataset: DatasetStore, checkpoint: str, embeddings: str, dtype: str = "auto"):
        from locsens.checkpointing import load_model
        from locsens.scoring import ScoringEngine

        self.name = name
        self.model, ckpt = load_model(checkpoint, expect="locsens")
        made_from = ckpt["locsens"].get("made_from") or {}
        self.store = EmbeddingStore(embeddings, dataset)
        exported_by = (self.store.made_from.get("checkpoint") or {}).get("path", "?")
        trained_on = (made_from.get("embeddings") or {}).get("path", "?")
        require_made_from(
            f"LocSens checkpoint {checkpoint}",
            made_from.get("embeddings"),
            "embeddings store",
            {"id": self.store.content_id, "path": str(embeddings)},
            f"that store was re-exported since (now from {exported_by}); retrain LocSens on it, or restore the "
            f"embeddings it was trained on ({trained_on})",
        )
        require_made_from(
            f"LocSens checkpoint {checkpoint}",
            made_from.get("dataset"),
            "dataset store",
            {"id": dataset.content_id, "path": str(dataset.path)},
            "evaluate it on the dataset store it was trained on",
        )
        self.lineage = {
            "checkpoint": file_ref(checkpoint),
            "embeddings": {"id": self.store.content_id, "path": str(embeddings)},
        }
        self.image = torch.from_numpy(self.store.image)
        self.tag = torch.from_numpy(self.store.tag)
        self.engine = ScoringEngine(self.model, dtype=dtype, tag_embeddings=self.tag)
        self.lat = torch.from_numpy(dataset.lat)
        self.lon = torch.from_numpy(dataset.lon)
        self._prepared = None

    def tag_scores(self, rows: np.ndarray, lat=None, lon=None) -> torch.Tensor:
        r = torch.as_tensor(rows)
        lat = self.lat[r] if lat is None else torch.as_tensor(lat, dtype=torch.float64)
        lon = self.lon[r] if lon is None else torch.as_tensor(lon, dtype=torch.float64)
        with torch.no_grad():
            return self.engine.score_tags(self.image[r], lat, lon).float()

    def retrieve(self, tag_ids, lat, lon, candidate_rows, k: int) -> torch.Tensor:
        key = hashlib.sha1(np.asarray(candidate_rows).tobytes()).hexdigest()
        if self._prepared is None or self._prepared[0] != key:
            self._prepared = (key, self.engine.prepare_images(self.image[torch.as_tensor(candidate_rows)]))
        with torch.no_grad():
            _, ids = self.engine.score_images(
                self.tag[torch.as_tensor(tag_ids)], torch.as_tensor(lat), torch.as_tensor(lon), self._prepared[1], k=k
            )
        return ids


def build_method(name: str, spec: dict, dataset: DatasetStore, built: dict):
    """One method from its config entry. ``built`` holds the methods made so far (for products)."""
    kind = spec.get("kind")
    unknown = set(spec) - {"kind", "level", "embeddings_path", "checkpoint", "visual", "weight", "dtype"}
    if unknown:
        raise KeyError(
            f"methods.{name}: unknown keys {sorted(unknown)} (a method takes kind and, by kind, level, "
            "embeddings_path, checkpoint, visual, weight, dtype)"
        )
    path_keys = [k for k in ("embeddings_path", "checkpoint") if spec.get(k)]
    for k in path_keys:
        if not Path(spec[k]).exists():
            raise FileNotFoundError(f"methods.{name}.{k}: {spec[k]} does not exist")
    if kind == "frequency":
        return FrequencyMethod(name, dataset, spec["level"])
    if kind == "embeddings":
        return EmbeddingMethod(name, dataset, spec["embeddings_path"])
    if kind == "product_of_experts":
        visual = built.get(spec["visual"])
        if not isinstance(visual, EmbeddingMethod):
            raise KeyError(f"methods.{name}.visual: {spec['visual']!r} must name an earlier 'embeddings' method")
        return ProductOfExperts(name, dataset, visual, spec["level"], float(spec.get("weight", 1.0)))
    if kind == "locsens":
        return LocSensMethod(name, dataset, spec["checkpoint"], spec["embeddings_path"], spec.get("dtype", "auto"))
    raise ValueError(
        f"methods.{name}.kind: expected frequency | embeddings | product_of_experts | locsens, got {kind!r}"
    )
