"""LocSens: a relevance score for an (image, tag, location) triplet (Gomez et al., ECCV 2020), composed of parts.

Architecture (the paper's; every part is its own config node with a ``_target_``)::

    image [E] -> image_branch (L2 -> Linear(E, 300) + ReLU -> L2) ---------------\
    tag   [E] -> tag_branch   (L2 -> Linear(E, 300) + ReLU -> L2) ----------------+-> scorer -> score
    lat/lon   -> location_encoder -> location_branch (Linear(L, 300) + ReLU -> L2) /
                                     (location_branch: null -> the encoder's raw output)

* ``location_encoder`` (``locsens.models.location_encoders``): the paper's normalised (lat', lon'), or
  wrap / sphere_multiscale / multiresolution_grid.
* ``image_branch`` / ``tag_branch`` / ``location_branch``: ``locsens.models.scorer.Branch`` (or ``ZeroBranch``).
* ``scorer``: ``locsens.models.scorer.Scorer`` (the MLP, optional pairwise products and similarity skip,
  and its exact fast inference, which the scoring engine drives).

The paper's fusion variants are compositions (``conf/model/fusion/``): ``concat300`` (a 300-d location
branch), ``raw2d`` (``location_branch: null``: the paper found the model then ignores location),
``zeroed`` (a ``ZeroBranch``), ``dropout`` (``concat300`` whose location block is zeroed per positive group
with probability ``location_dropout`` in training). Any of them can have ``progressive_warmup_epochs``
location-free epochs followed by a linear ramp over ``progressive_ramp_epochs`` of the drop probability
down to ``location_dropout`` -- the paper's progressive fusion.

The parts arrive as config dicts (``_recursive_: false``) and are built here; the dicts are the
hyperparameters saved in checkpoints, so ``locsens.checkpointing.load_model`` rebuilds the model from
the checkpoint alone. Only ``locsens.*`` targets are built (a checkpoint cannot make us import anything
else).

Training: each positive (image, tag, location) comes with K negatives (``locsens.data.triplets``); every
location of the group is replaced by a geodesic Gaussian draw around it with scale ``self.sigma``
(normalised units; ``sigma_to_km`` converts), which the ``SigmaSchedule`` callback sets: the one source
of sigma (0 = raw locations). Loss: margin ranking loss, mean over the K pairs and the batch. Location
sampling and dropout happen only in ``training_step``: ``forward`` in eval mode is deterministic, and
validation uses raw locations.

Validation: ``val/loss`` on fixed val triplets; tagging ``val/A@k`` of a fixed val subset scored with its
location against the whole vocabulary; ``val/P@10@<D>km`` (queries = (one tag of a subset image, its
location), candidates = the subset) and ``val/P@10`` (tag only), all through ``locsens.metrics`` and the
evaluation's scoring engine (exact, fp32), so validation ranks exactly as the evaluation does. The subset
metrics are computed per process: exact on one device; under DDP each rank reports its own share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric

from locsens.checkpointing import record_model
from locsens.geo import sample_around, sigma_to_km
from locsens.metrics.retrieval import LocationQueries, LocationSensitivePrecision, RetrievalCandidates, threshold_key
from locsens.metrics.tagging import TaggingAccuracy
from locsens.models.optim import configure, scaled_parameter_groups
from locsens.scoring import ScoringEngine

INITS = ("paper", "torch")
PARTS = "locsens.models."
# the paper's parts (conf/model/locsens.yaml writes the same)
PAPER_LOCATION_ENCODER = {"_target_": PARTS + "location_encoders.LatLonEncoder"}
PAPER_BRANCH = {"_target_": PARTS + "scorer.Branch", "out_dim": 300}
PAPER_LOCATION_BRANCH = {"_target_": PARTS + "scorer.Branch", "out_dim": 300, "normalise_input": False}
PAPER_SCORER = {
    "_target_": PARTS + "scorer.Scorer",
    "hidden": [2048, 2048, 2048, 1024, 512],
    "groups": 32,
    "gn_eps": 1e-3,
}


def _distinct(index: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each distinct row of ``rows [..., E]`` once, by its id in ``index [...]``; every position's row in it)."""
    ids, inverse = torch.unique(index.reshape(-1), return_inverse=True)
    first = torch.empty(len(ids), dtype=torch.long, device=index.device)
    first.scatter_(0, inverse, torch.arange(inverse.numel(), device=index.device))  # any occurrence: rows agree
    return torch.index_select(rows.reshape(-1, rows.shape[-1]), 0, first), inverse.view(index.shape)


def _distinct_places(lat: torch.Tensor, lon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each distinct (lat, lon) pair once [n, 2], each position's row in it [N]), by exact bit equality:
    a float32 pair is one int64 key (``torch.unique`` over 2-d rows is many times slower)."""
    pairs = torch.stack([lat, lon], dim=1).contiguous()
    if pairs.dtype == torch.float32:
        ids, inverse = torch.unique(pairs.view(torch.int64).squeeze(1), return_inverse=True)
        first = torch.empty(len(ids), dtype=torch.long, device=pairs.device)
        first.scatter_(0, inverse, torch.arange(inverse.numel(), device=pairs.device))
        return torch.index_select(pairs, 0, first), inverse
    return torch.unique(pairs, dim=0, return_inverse=True)


def _prior_skip_spec(spec: dict | None) -> dict | None:
    """The prior skip's config (``{checkpoint, weight}``) completed with the prior net's spec read from the
    checkpoint (and its weights, under ``_state``); a spec that has ``net`` (a saved LocSens) is kept."""
    if spec is None:
        return None
    allowed = {"checkpoint", "weight", "net", "checkpoint_sha256"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"model.prior_skip: unknown keys {sorted(unknown)}; expected checkpoint and weight")
    spec = {"weight": 1.0, **spec}
    if spec.get("net") is None:
        from locsens.checkpointing import load_checkpoint
        from locsens.files import file_sha256

        if not spec.get("checkpoint"):
            raise ValueError(
                "model.prior_skip.checkpoint: give a GeoPrior checkpoint (python train.py experiment=geo_prior)"
            )
        ckpt = load_checkpoint(spec["checkpoint"], expect="prior")
        hp = ckpt.get("hyper_parameters") or {}
        spec["net"] = {k: hp[k] for k in ("num_tags", "location_encoder", "width", "depth")}
        spec["_state"] = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        spec["checkpoint_sha256"] = file_sha256(spec["checkpoint"])
        spec["checkpoint"] = str(spec["checkpoint"])
    return spec


def plain(spec: Any) -> Any:
    """A config node as plain Python (checkpoints load with weights_only=True)."""
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec


def build_part(spec: dict, what: str, **kwargs) -> nn.Module:
    """Instantiate one part from its config dict; only locsens' own classes."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = str(spec.get("_target_", ""))
    if not target.startswith(PARTS):
        raise ValueError(
            f"model.{what}._target_={target!r}: a LocSens part must be one of locsens' own ({PARTS}...) classes"
        )
    try:
        return instantiate(OmegaConf.create(spec), **kwargs)
    except InstantiationException as e:  # name the part and say what was wrong, without Hydra's wrapping
        cause = e.__cause__ or e
        raise ValueError(f"model.{what} ({target}): {cause}") from None


class LocSens(L.LightningModule):
    """Scores (image, tag, location) triplets; see the module docstring.

    Args:
        embed_dim: dimension E of the input image/tag embeddings (filled from the data by ``train()``).
        location_encoder, image_branch, tag_branch, location_branch, scorer: the parts' config dicts
            (``location_branch=None``: the encoder's raw output is the location block).
        location_dropout: probability that a positive group's location block is zeroed in training.
        progressive_warmup_epochs / progressive_ramp_epochs: location-free epochs, then a linear ramp.
        init: ``paper`` (every Linear N(0, init_std), biases 0) or ``torch`` (PyTorch's default init).
        margin: margin of the ranking loss (paper: 0.1). num_negatives: K, checked against the batches.
        optimizer / scheduler: their config nodes (``locsens.models.optim``); a submodule with an
            ``lr_scale`` (the learned location grid) gets its own group at ``lr * lr_scale``.
        val_ks: tagging A@k cut-offs; val_distances_km: retrieval distance thresholds;
        val_min_query_images: a retrieval query is kept if its tag has at least this many candidates.
    """

    def __init__(
        self,
        embed_dim: int | None = None,
        location_encoder: dict = PAPER_LOCATION_ENCODER,
        image_branch: dict = PAPER_BRANCH,
        tag_branch: dict = PAPER_BRANCH,
        location_branch: dict | None = PAPER_LOCATION_BRANCH,
        scorer: dict = PAPER_SCORER,
        location_dropout: float = 0.0,
        progressive_warmup_epochs: int = 0,
        progressive_ramp_epochs: int = 0,
        init: str = "paper",
        init_std: float = 0.01,
        margin: float = 0.1,
        num_negatives: int = 6,
        optimizer: Any = None,
        scheduler: Any = None,
        val_ks: Sequence[int] = (1, 10, 50),
        val_distances_km: Sequence[float] = (25.0, 200.0),
        val_min_query_images: int = 10,
        prior_skip: dict | None = None,
    ):
        super().__init__()
        if embed_dim is None:
            raise ValueError(
                "model.embed_dim is null: train() fills it from datamodule.model_kwargs(); pass it when building LocSens directly"
            )
        if init not in INITS:
            raise ValueError(f"model.init={init!r}; expected one of {INITS}")
        if not 0.0 <= location_dropout <= 1.0:
            raise ValueError(f"model.location_dropout={location_dropout} must lie in [0, 1]")
        # plain containers (not Hydra configs) so checkpoints load with torch.load(weights_only=True)
        location_encoder, image_branch, tag_branch = plain(location_encoder), plain(image_branch), plain(tag_branch)
        location_branch, scorer = plain(location_branch), plain(scorer)
        prior_skip = _prior_skip_spec(plain(prior_skip))
        val_ks, val_distances_km = [int(k) for k in val_ks], [float(d) for d in val_distances_km]
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.sigma = 0.0  # set by the SigmaSchedule callback (locsens.callbacks): the one source of sigma

        # parts, in the order their parameters are created (the paper init draws them in this order)
        self.image_branch = build_part(image_branch, "image_branch", in_dim=embed_dim)
        self.tag_branch = build_part(tag_branch, "tag_branch", in_dim=embed_dim)
        if self.image_branch.out_dim != self.tag_branch.out_dim:
            raise ValueError(
                f"model.image_branch.out_dim={self.image_branch.out_dim} and model.tag_branch.out_dim="
                f"{self.tag_branch.out_dim} must agree (the scorer multiplies them)"
            )
        self.location_encoder = build_part(location_encoder, "location_encoder")
        self.location_branch = (
            None
            if location_branch is None
            else build_part(location_branch, "location_branch", in_dim=self.location_encoder.out_dim)
        )
        self.location_dim = (
            self.location_encoder.out_dim if self.location_branch is None else self.location_branch.out_dim
        )
        self.scorer = build_part(scorer, "scorer", loc_dim=self.location_dim, branch_dim=self.image_branch.out_dim)
        if init == "paper":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)
        # the prior skip: + w * log p(tag | location) of a frozen learned prior (built after the paper init,
        # which must not touch its weights; they come from its checkpoint or from this model's state)
        self.prior_net, self.prior_weight = None, None
        if prior_skip is not None:
            from locsens.models.geo_prior import GeoPriorNet

            self.prior_net = GeoPriorNet(**prior_skip["net"])
            if prior_skip.get("_state") is not None:
                self.prior_net.load_state_dict(prior_skip.pop("_state"), strict=True)
            self.prior_net.requires_grad_(False)
            self.prior_weight = nn.Parameter(torch.tensor(float(prior_skip["weight"])))
            self.hparams["prior_skip"] = {k: v for k, v in prior_skip.items() if k != "_state"}

        self.val_loss = MeanMetric()  # sample-weighted, sum-reduced states (exact under DDP)
        self.val_tagging = TaggingAccuracy(
            num_tags=1, ks=val_ks
        )  # resized to the vocabulary in on_validation_epoch_start
        self._val_store: dict[str, list[torch.Tensor]] = {}
        self._val_engine: ScoringEngine | None = None

    # ------------------------------------------------------------------------------------------
    # the model
    # ------------------------------------------------------------------------------------------
    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        return self.image_branch(img)

    def encode_tag(self, tag: torch.Tensor) -> torch.Tensor:
        return self.tag_branch(tag)

    def encode_location(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        """[B] degrees -> [B, location_dim] (the location branch's output, or the encoder's raw output)."""
        enc = self.location_encoder(lat_deg, lon_deg).to(self.scorer.layers[0].weight.dtype)
        return enc if self.location_branch is None else self.location_branch(enc)

    def forward(
        self,
        img: torch.Tensor,
        tag: torch.Tensor,
        lat: torch.Tensor,
        lon: torch.Tensor,
        tag_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        scores = self.scorer(self.encode_location(lat, lon), self.encode_image(img), self.encode_tag(tag), img, tag)
        if self.prior_net is not None:
            if tag_ids is None:
                raise ValueError("this LocSens has a prior skip: pass the tags' vocabulary ids (tag_ids)")
            scores = scores + self.prior_weight * self.prior_term(lat, lon, tag_ids)
        return scores

    def prior_term(self, lat: torch.Tensor, lon: torch.Tensor, tag_ids: torch.Tensor) -> torch.Tensor:
        """``log p(tag | location)`` of the prior skip for triplets (any shape, one per (lat, lon, tag))."""
        with torch.no_grad():
            feats = self.prior_net.features(lat.reshape(-1), lon.reshape(-1))
            return self.prior_net.pair_log_prior(feats, tag_ids.reshape(-1)).view(tag_ids.shape)

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def location_drop_probability(self, epoch: int) -> float:
        """Probability that a positive group's location block is zeroed in training at ``epoch``."""
        hp = self.hparams
        final = hp.location_dropout
        if epoch < hp.progressive_warmup_epochs:
            return 1.0
        if epoch < hp.progressive_warmup_epochs + hp.progressive_ramp_epochs:
            t = (epoch - hp.progressive_warmup_epochs + 1) / (hp.progressive_ramp_epochs + 1)
            return 1.0 + t * (final - 1.0)
        return final

    def ranking_loss(self, scores: torch.Tensor) -> torch.Tensor:
        """Margin ranking loss of ``scores [B, 1 + K]`` (positive at column 0), mean over B x K pairs."""
        return torch.relu(self.hparams.margin - (scores[:, :1] - scores[:, 1:])).mean()

    def _group_scores(self, batch: dict, lat: torch.Tensor, lon: torch.Tensor, drop_p: float = 0.0) -> torch.Tensor:
        """Scores ``[B, M]`` of a batch's triplet groups. With the batch's ``image_index`` / ``tag_index``
        (the triplet datasets give them) every distinct image, tag and place is encoded once and its
        first-layer term computed once (``Scorer.forward_indexed``); without, triplet by triplet."""
        b, m, e = batch["image"].shape
        if self.prior_net is not None and "tag_index" not in batch:
            raise ValueError("a LocSens with a prior skip trains on batches with tag_index (locsens.data.triplets)")
        if "image_index" not in batch or "tag_index" not in batch:
            loc_e = self.encode_location(lat.reshape(-1), lon.reshape(-1)).view(b, m, -1)
            if drop_p > 0:
                keep = (torch.rand(b, 1, 1, device=loc_e.device) >= drop_p).to(loc_e.dtype)  # one draw per group
                loc_e = loc_e * keep
            return self.scorer(
                loc_e, self.encode_image(batch["image"]), self.encode_tag(batch["tag"]), batch["image"], batch["tag"]
            )
        image, image_of = _distinct(batch["image_index"], batch["image"])
        tag, tag_of = _distinct(batch["tag_index"], batch["tag"])
        places, place_of = _distinct_places(lat.reshape(-1), lon.reshape(-1))
        prior = None
        if self.prior_net is not None:  # each distinct place's prior features once, then one dot per triplet
            with torch.no_grad():
                feats = self.prior_net.features(places[:, 0], places[:, 1])
                prior = self.prior_net.pair_log_prior(feats.index_select(0, place_of), batch["tag_index"].reshape(-1))
        loc_e = self.encode_location(places[:, 0], places[:, 1])
        if drop_p > 0:  # a dropped group reads a zero location row, as zeroing its location block does
            keep = torch.rand(b, 1, 1, device=loc_e.device) >= drop_p  # the same draw as triplet by triplet
            loc_e = torch.cat([loc_e, loc_e.new_zeros(1, loc_e.shape[1])])
            place_of = torch.where(keep.view(b, 1).expand(b, m).reshape(-1), place_of, len(places))
        parts = {"loc": loc_e, "img": self.encode_image(image), "tag": self.encode_tag(tag)}
        index = {"loc": place_of.view(b, m), "img": image_of, "tag": tag_of}
        scores = self.scorer.forward_indexed(parts, index, image, tag)
        return scores if prior is None else scores + self.prior_weight * prior.view(b, m)

    @staticmethod
    def triplet_locations(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, M] locations of a batch's triplets (``lat``/``lon`` given per triplet [B, M], or per group [B])."""
        shape = batch["image"].shape[:2]
        lat, lon = batch["lat"], batch["lon"]
        return (lat, lon) if lat.ndim == 2 else (lat[:, None].expand(shape), lon[:, None].expand(shape))

    def sample_locations(self, lat: torch.Tensor, lon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time location sampling: each location independently replaced by a geodesic Gaussian draw
        around it with sigma_km = sigma_to_km(self.sigma) (global torch RNG, seeded per epoch)."""
        if self.sigma <= 0:
            return lat, lon
        return sample_around(lat, lon, sigma_to_km(self.sigma))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        b, m, _ = batch["image"].shape
        if m - 1 != self.hparams.num_negatives:
            raise ValueError(
                f"batch has {m - 1} negatives per positive, model.num_negatives={self.hparams.num_negatives}: set both from one config key"
            )
        lat, lon = self.sample_locations(*self.triplet_locations(batch))
        scores = self._group_scores(batch, lat, lon, self.location_drop_probability(self.current_epoch))
        loss = self.ranking_loss(scores)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=b)
        self.log(
            "train/pair_accuracy",
            (scores[:, :1] > scores[:, 1:]).float().mean(),
            on_step=False,
            on_epoch=True,
            batch_size=b,
        )
        return loss

    def configure_optimizers(self):
        return configure(
            self.optimizer_spec, self.scheduler_spec, scaled_parameter_groups(self, self.optimizer_spec), "LocSens"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_model(self, checkpoint)  # model class + the stores' ids (locsens.checkpointing)

    # ------------------------------------------------------------------------------------------
    # validation (raw locations)
    # ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "tag_embeddings"):
            raise RuntimeError(
                "LocSens validation needs a datamodule with tag_embeddings (locsens.data.triplets.TripletDataModule)"
            )
        vocab = dm.tag_embeddings.to(self.device)
        if self.val_tagging.num_tags != vocab.shape[0]:
            self.val_tagging = TaggingAccuracy(num_tags=vocab.shape[0], ks=self.hparams.val_ks).to(self.device)
        self.val_tagging.reset()
        # the evaluation's exact engine, in fp32 (validation picks checkpoints: no reduced precision)
        self._val_engine = ScoringEngine(self, dtype="fp32", tag_embeddings=vocab)
        self._val_store = {key: [] for key in ("image", "lat", "lon", "target", "query_tag")}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            scores = self._group_scores(batch, *self.triplet_locations(batch))
            self.val_loss.update(self.ranking_loss(scores), weight=scores.shape[0])
            self.log("val/loss", self.val_loss, prog_bar=True, batch_size=scores.shape[0], add_dataloader_idx=False)
            return
        _, top = self._val_engine.score_tags(batch["image"], batch["lat"], batch["lon"], k=max(self.hparams.val_ks))
        self.val_tagging.update(top, batch["target"])
        for key in self._val_store:
            self._val_store[key].append(batch[key])

    def on_validation_epoch_end(self) -> None:
        if not self._val_store.get("image"):
            return
        for name, value in self.val_tagging.compute().items():
            if name.startswith("A@"):
                self.log(f"val/{name}", float(value))
        self._log_retrieval()
        self._val_store, self._val_engine = {}, None

    def _log_retrieval(self) -> None:
        """Location-sensitive P@10 over the val subset (candidates) with its one-tag queries (locsens.metrics)."""
        st = self._val_store
        width = max(t.shape[1] for t in st["target"])
        target = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=-1) for t in st["target"]]).cpu()
        image, lat, lon, query_tag = (torch.cat(st[k]) for k in ("image", "lat", "lon", "query_tag"))
        candidates = RetrievalCandidates.from_padded(target, self.val_tagging.num_tags, lat=lat.cpu(), lon=lon.cpu())
        per_tag = candidates.images_per_tag()
        query_tag = query_tag.cpu()
        keep = torch.nonzero(
            (query_tag >= 0) & (per_tag[query_tag.clamp(min=0)] >= self.hparams.val_min_query_images)
        ).squeeze(1)
        self.log("val/retrieval_queries", float(len(keep)))
        if len(keep) == 0:
            return
        queries = LocationQueries(query_tag[keep], candidates.lat[keep], candidates.lon[keep], keep, keep)
        _, top = self._val_engine.score_images(queries.tag.to(self.device), lat[keep], lon[keep], image, k=10)
        thresholds = [math.inf, *self.hparams.val_distances_km]
        metric = LocationSensitivePrecision(candidates, thresholds_km=thresholds, k=10)
        metric.update(top.cpu(), queries)
        values = metric.compute()
        self.log("val/P@10", values[threshold_key(math.inf)])
        for d in self.hparams.val_distances_km:
            self.log(f"val/P@10@{d:g}km", values[threshold_key(d)])
