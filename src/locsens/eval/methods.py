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
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from locsens.artifacts import RunLayout, file_ref, require_made_from
from locsens.data.store import DatasetStore, EmbeddingStore
from locsens.metrics.tagging import ranked_topk


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

    def __init__(self, name: str, dataset: DatasetStore, path: str, store: EmbeddingStore | None = None):
        self.name = name
        self.store = store if store is not None else EmbeddingStore(path, dataset)  # an opened one: no re-read
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

    def scores_of(self, image: torch.Tensor) -> torch.Tensor:
        """Tag scores ``[B, V]`` of new image embeddings ``[B, E]`` (a photo outside the store: tag.py)."""
        image = torch.as_tensor(image, dtype=self.tag.dtype)
        return (F.normalize(image, dim=-1) if self.store.similarity == "cosine" else image) @ self.tag.T

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
        return self.tagger.topk(rows, k, exclude=exclude)


class PriorMethod(ScoreRanking):
    """Tagging by a location prior alone: rank the vocabulary by ``log p(tag | location)``.

    ``prior``: ``knn`` / ``kde`` (``locsens.priors.NeighbourPrior`` over the training photos, with its
    ``k`` / ``bandwidth_km``), ``learned`` (a ``GeoPrior`` checkpoint: ``log sigmoid`` of its logits) or
    ``frequency`` (the smoothed place-frequency prior of ``level``)."""

    location_aware = True

    def __init__(self, name: str, dataset: DatasetStore, prior: str, checkpoint: str | None = None, **options):
        self.name, self.kind = name, prior
        self.lat, self.lon = dataset.lat, dataset.lon
        if prior in ("knn", "kde"):
            from locsens.priors import NeighbourPrior

            self.prior = NeighbourPrior(dataset, prior, **options)
            self.lineage = {"dataset": dataset.content_id, "prior": {"kind": prior, **options}}
        elif prior == "learned":
            from locsens.checkpointing import load_model

            if not checkpoint:
                raise KeyError(f"methods.{name}: prior=learned needs checkpoint (a GeoPrior run's checkpoint)")
            model, ckpt = load_model(checkpoint, expect="prior")
            require_made_from(
                f"GeoPrior checkpoint {checkpoint}",
                (ckpt["locsens"].get("made_from") or {}).get("dataset"),
                "dataset store",
                {"id": dataset.content_id, "path": str(dataset.path)},
                "evaluate it on the dataset store it was trained on",
            )
            self.net = model.net
            self.lineage = {"checkpoint": file_ref(checkpoint)}
        elif prior == "frequency":
            from locsens.eval.baselines import FrequencyTagger

            self.prior = FrequencyTagger(dataset, level=options.get("level", "town"))
            self.prior.fit()
            self.lineage = {"dataset": dataset.content_id, "prior": {"kind": prior, **options}}
        else:
            raise ValueError(f"methods.{name}.prior: expected knn | kde | learned | frequency, got {prior!r}")

    def log_prior(self, rows: np.ndarray) -> torch.Tensor:
        """``log p(tag | location)`` of dataset ``rows``: ``[len(rows), V]``."""
        rows = np.asarray(rows)
        if self.kind == "learned":
            with torch.no_grad():
                return self.net.log_prior(torch.from_numpy(self.lat[rows]), torch.from_numpy(self.lon[rows])).float()
        if self.kind == "frequency":
            return torch.log(self.prior.prior(rows))
        return torch.log(self.prior.prior(self.lat[rows], self.lon[rows]))

    def tag_scores(self, rows: np.ndarray) -> torch.Tensor:
        return self.log_prior(rows)


class ProductOfExperts(ScoreRanking):
    """A visual model's tag probabilities times a location tag prior: log p(t|img) + w log p(t|place).

    MCC scores are cosines; p(t|img) = softmax(cos / temperature) with the temperature chosen on the
    validation split (maximising A@10 of the product) from a small grid, so nothing is tuned on test.
    The prior is the frequency prior of ``level`` or an earlier :class:`PriorMethod`.
    """

    location_aware = True

    def __init__(
        self,
        name: str,
        dataset: DatasetStore,
        visual: EmbeddingMethod,
        level: str | None = None,
        weight: float = 1.0,
        temperatures=(0.01, 0.02, 0.05, 0.1, 0.2),
        tune_rows: int = 2000,
        seed: int = 0,
        prior: PriorMethod | None = None,
    ):
        self.name, self.visual, self.weight = name, visual, weight
        self.lineage = {**visual.lineage, **({"prior": prior.lineage} if prior is not None else {})}
        self.prior = prior if prior is not None else PriorMethod(name, dataset, "frequency", level=level)
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
        return log_visual + self.weight * self.prior.log_prior(rows)


class LocSensMethod:
    """A trained LocSens checkpoint scored with the exact scoring engine: exhaustively, or as the second
    stage of a shortlist-and-rerank cascade (``tag_shortlist`` / ``image_shortlist``: sizes of
    :class:`locsens.eval.shortlist.TagShortlist` / :class:`~locsens.eval.shortlist.ImageShortlist`, built
    from the embeddings store LocSens was trained on)."""

    location_aware = True

    def __init__(
        self,
        name: str,
        dataset: DatasetStore,
        checkpoint: str,
        embeddings: str,
        dtype: str = "auto",
        tag_shortlist: dict | None = None,
        image_shortlist: dict | None = None,
    ):
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
        self.tag_shortlist = None
        if tag_shortlist:
            from locsens.eval.shortlist import TagShortlist

            self.tag_shortlist = TagShortlist(
                dataset, self.image, self.tag, self.store.similarity, tag_shortlist["agnostic"], tag_shortlist["prior"]
            )
        self.image_shortlist = dict(image_shortlist) if image_shortlist else None
        self._candidates = None  # (key of the candidate rows, prepared images, their shortlist builder)
        self.pairs_scored = {"tagging": 0, "retrieval": 0}

    def tag_scores(self, rows: np.ndarray, lat=None, lon=None) -> torch.Tensor:
        r = torch.as_tensor(rows)
        lat = self.lat[r] if lat is None else torch.as_tensor(lat, dtype=torch.float64)
        lon = self.lon[r] if lon is None else torch.as_tensor(lon, dtype=torch.float64)
        with torch.no_grad():
            return self.engine.score_tags(self.image[r], lat, lon).float()

    def rank_tags(self, rows: np.ndarray, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The engine's exact top-k (with its fp32 rescore in reduced precision), over every tag or the
        shortlist; ``-1`` padded where fewer than k tags remain."""
        r = torch.as_tensor(rows)
        shortlist = None if self.tag_shortlist is None else self.tag_shortlist(rows, exclude)
        n_tags = int(self.tag.shape[0] - (0 if exclude is None else exclude.sum()))
        self.pairs_scored["tagging"] += len(r) * n_tags if shortlist is None else int((shortlist >= 0).sum())
        with torch.no_grad():
            _, ids = self.engine.score_tags(
                self.image[r], self.lat[r], self.lon[r], k=k, candidates=shortlist, exclude=exclude
            )
        return _padded(ids, k)

    def rank_tags_both(self, rows: np.ndarray, k: int, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-k with place names, top-k without), as two :meth:`rank_tags` calls give them; through the
        cascade both rank one shortlist (the union of the two), scored once."""
        if self.tag_shortlist is None:
            return self.rank_tags(rows, k), self.rank_tags(rows, k, exclude=exclude)
        from locsens.eval.shortlist import union

        r = torch.as_tensor(rows)
        shortlist = union(self.tag_shortlist(rows, None), self.tag_shortlist(rows, exclude))
        self.pairs_scored["tagging"] += int((shortlist >= 0).sum())
        with torch.no_grad():
            (_, a), (_, b) = self.engine.rank_tag_lists(
                self.image[r], self.lat[r], self.lon[r], shortlist, k, [None, exclude]
            )
        return _padded(a, k), _padded(b, k)

    def retrieve(self, tag_ids, lat, lon, candidate_rows, k: int) -> torch.Tensor:
        key = hashlib.sha1(np.asarray(candidate_rows).tobytes()).hexdigest()
        if self._candidates is None or self._candidates[0] != key:
            rows = torch.as_tensor(np.asarray(candidate_rows))
            builder = None
            if self.image_shortlist:
                from locsens.eval.shortlist import ImageShortlist

                builder = ImageShortlist(
                    self.image[rows],
                    self.tag,
                    self.lat[rows],
                    self.lon[rows],
                    self.store.similarity,
                    self.image_shortlist["agnostic"],
                    self.image_shortlist["nearest"],
                )
            self._candidates = (key, self.engine.prepare_images(self.image[rows]), builder)
        _, prepared, builder = self._candidates
        shortlist = None if builder is None else builder(tag_ids, lat, lon)
        n = len(tag_ids)
        self.pairs_scored["retrieval"] += n * len(prepared) if shortlist is None else int((shortlist >= 0).sum())
        with torch.no_grad():
            _, ids = self.engine.score_images(
                torch.as_tensor(tag_ids).long(),  # ids: the engine reads the vocabulary (and a prior skip)
                torch.as_tensor(lat),
                torch.as_tensor(lon),
                prepared,
                k=k,
                shortlist=shortlist,
            )
        return _padded(ids, k)


@dataclass
class LocSensRun:
    """A trained LocSens run opened with what it was trained on: its dataset store, the LocSens method
    (the exact engine) and the agnostic method of the embeddings it was trained on (e.g. MCC)."""

    layout: RunLayout
    dataset: DatasetStore
    locsens: LocSensMethod
    agnostic: EmbeddingMethod


def open_locsens_run(run, dataset_path=None, dtype: str = "auto") -> LocSensRun:
    """The run directory ``run`` (its best checkpoint) with the stores its checkpoint records, or
    ``dataset_path`` instead (refused unless it is the same store by content id); the explorer's and
    tag.py's way in."""
    from locsens.checkpointing import checkpoint_record

    layout = RunLayout(Path(run))
    if not layout.path.is_dir():
        raise FileNotFoundError(f"run={run}: no such run directory")
    checkpoint = layout.best_checkpoint()
    record = checkpoint_record(checkpoint)
    made_from = record.get("made_from") or {}
    if "embeddings" not in made_from:
        raise ValueError(
            f"run={run}: its checkpoint {checkpoint} is a {record['model_class'].rsplit('.', 1)[-1]}, not LocSens, "
            "so not a LocSens run (give one, e.g. outputs/demo-demo/locsens_raw)"
        )
    dataset_path = Path(dataset_path or made_from["dataset"]["path"])
    embeddings_path = Path(made_from["embeddings"]["path"])
    for what, path in (("dataset store", dataset_path), ("embeddings store", embeddings_path)):
        if not path.is_file():
            raise FileNotFoundError(f"run={run} was trained on the {what} {path}, which does not exist")
    dataset = DatasetStore(dataset_path)
    # refuses a checkpoint, store or dataset that do not belong together (content ids, not paths)
    locsens = LocSensMethod(layout.name(), dataset, str(checkpoint), str(embeddings_path), dtype)
    model = str(locsens.store.attrs.get("model", "agnostic"))
    agnostic = EmbeddingMethod(model, dataset, str(embeddings_path), store=locsens.store)
    return LocSensRun(layout, dataset, locsens, agnostic)


def _padded(ids: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, k]`` ids, ``-1`` padded on the right where fewer than k came back."""
    if ids.shape[1] >= k:
        return ids[:, :k]
    return torch.cat([ids, ids.new_full((ids.shape[0], k - ids.shape[1]), -1)], dim=1)


def build_method(name: str, spec: dict, dataset: DatasetStore, built: dict, shortlists: dict | None = None):
    """One method from its config entry. ``built`` holds the methods made so far (for products);
    ``shortlists`` = ``{"tagging": sizes | None, "retrieval": sizes | None}`` for LocSens' cascade."""
    kind = spec.get("kind")
    prior_options = {"k", "bandwidth_km", "max_neighbours", "alpha"}
    allowed = {"kind", "level", "embeddings_path", "model", "checkpoint", "visual", "weight", "dtype", "prior"}
    unknown = set(spec) - allowed - (prior_options if kind == "prior" else set())
    if unknown:
        import difflib

        hints = [
            f"{u!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(u, allowed | prior_options, 1))
            else repr(u)
            for u in sorted(unknown)
        ]
        raise KeyError(
            f"methods.{name}: unknown keys {', '.join(hints)} (a method takes kind and, by kind, level, "
            "embeddings_path, model, checkpoint, visual, weight, dtype, prior; a prior method k, bandwidth_km, "
            "max_neighbours, alpha)"
        )
    path_keys = [k for k in ("embeddings_path", "checkpoint") if spec.get(k)]
    for k in path_keys:
        if not Path(spec[k]).exists():
            raise FileNotFoundError(f"methods.{name}.{k}: {spec[k]} does not exist")
    if kind == "frequency":
        return FrequencyMethod(name, dataset, spec["level"])
    if kind == "embeddings":
        method = EmbeddingMethod(name, dataset, spec["embeddings_path"])
        # the store says which model it was exported from: an mcc.h5 that holds HER is refused, not labelled MCC
        want = spec.get("model") or (name if name in ("mlc", "mcc", "her") else None)
        got = str(method.store.attrs.get("model", ""))
        if want is not None and got.lower() != want.lower():
            raise ValueError(
                f"methods.{name}.embeddings_path: {spec['embeddings_path']} holds embeddings of model {got!r}, "
                f"expected {want!r}; export that model there (python export.py ...) or set methods.{name}.model"
            )
        return method
    if kind == "product_of_experts":
        visual = built.get(spec["visual"])
        if not isinstance(visual, EmbeddingMethod):
            raise KeyError(f"methods.{name}.visual: {spec['visual']!r} must name an earlier 'embeddings' method")
        try:
            weight = float(spec.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ValueError(f"methods.{name}.weight: {spec.get('weight')!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"methods.{name}.weight: {weight} must be a finite number")
        prior = None
        if spec.get("prior") is not None:
            prior = built.get(spec["prior"])
            if not isinstance(prior, PriorMethod):
                raise KeyError(f"methods.{name}.prior: {spec['prior']!r} must name an earlier 'prior' method")
        elif spec.get("level") is None:
            raise KeyError(
                f"methods.{name}: a product_of_experts takes a frequency prior's level or an earlier prior method"
            )
        return ProductOfExperts(name, dataset, visual, spec.get("level"), weight, prior=prior)
    if kind == "prior":
        options = {key: spec[key] for key in prior_options | {"level"} if spec.get(key) is not None}
        return PriorMethod(name, dataset, spec.get("prior"), spec.get("checkpoint"), **options)
    if kind == "locsens":
        shortlists = shortlists or {}
        return LocSensMethod(
            name,
            dataset,
            spec["checkpoint"],
            spec["embeddings_path"],
            spec.get("dtype", "auto"),
            tag_shortlist=shortlists.get("tagging"),
            image_shortlist=shortlists.get("retrieval"),
        )
    raise ValueError(
        f"methods.{name}.kind: expected frequency | embeddings | prior | product_of_experts | locsens, got {kind!r}"
    )
