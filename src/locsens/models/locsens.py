"""LocSens: a relevance score for an (image, tag, location) triplet (Gomez et al., ECCV 2020).

Architecture (the paper's; widths are config)::

    image  [E] -> L2 -> Linear(E, 300) + ReLU -> L2 ----------------------\
    tag    [E] -> L2 -> Linear(E, 300) + ReLU -> L2 -----------------------+-> cat [loc | img | tag]
    lat/lon -> location encoder -> Linear(L, 300) + ReLU -> L2 (concat300) /     -> [Linear + GroupNorm + ReLU] x n
                                -> raw encoder output      (raw2d)               -> Linear(last, 1) -> score
                                -> zeros [300]             (zeroed)
    pairwise_products=true: the scorer reads [loc | img | tag | img*tag | loc*tag | loc*img]

Fusion variants (the paper's ablation): ``concat300`` (the paper's), ``raw2d`` (the encoder's raw
output concatenated directly; the paper found the model then ignores location), ``zeroed`` (no
location information at all), ``dropout`` (``concat300`` whose location branch is zeroed per
positive group with probability ``location_dropout`` during training).

``pairwise_products`` (ours, not the paper's; off by default) appends the element-wise products of the
L2-normalised branches to the scorer's input: image*tag, and with a 300-d location branch
(``concat300`` / ``dropout`` / ``zeroed``) location*tag and location*image. The image-tag match, the
location-tag compatibility (which tags are used where) and the location-image compatibility (what
photos look like where: retrieval near a place reads only the candidate's pixels) then become linear
in the first layer instead of interactions the MLP has to assemble from ReLUs (cf. factorisation
machines; the geo priors of Mac Aodha et al. score a location embedding times a class embedding).
``similarity_skip`` (ours, off by default) adds ``w * cos(image, tag)`` of the INPUT embeddings (MCC's,
whose cosine is MCC's own ranking) to the score, with ``w`` a learned scalar starting at 1: LocSens then
starts from the location-agnostic model it is built on and its MLP learns the location-dependent
correction (residual learning), instead of first re-learning the image-tag match through the branches.

Any fusion can be given
``progressive_warmup_epochs`` location-free epochs followed by a linear ramp over
``progressive_ramp_epochs`` of the drop probability down to its final value (``location_dropout`` for
``dropout``, 0 otherwise) -- the paper's progressive fusion.

Training: each positive (image, tag, location) comes with K negatives (see ``locsens.data.triplets``);
every location of the group (positive and each negative independently) is replaced by a geodesic
Gaussian draw around it with scale ``self.sigma`` (paper's normalised units; ``sigma_to_km`` converts),
set by the ``SigmaSchedule`` callback. Loss: margin ranking loss, mean over the K (positive, negative)
pairs and the batch. Location sampling and dropout happen only in ``training_step``: ``forward`` in
eval mode is deterministic, and validation uses raw locations.

Validation: ``val/loss`` on fixed val triplets; tagging ``val/A@k`` of a fixed val subset scored with
its location against the whole vocabulary; location-sensitive retrieval ``val/P@10@<D>km`` (queries =
(one tag of a subset image, its location), candidates = the subset, relevant = carries the tag and lies
within D km) and ``val/P@10`` (tag only). Scoring is the evaluation's engine (``locsens.scoring``,
exact, fp32, bounded chunks), so validation ranks exactly as the evaluation does. The subset metrics are computed
per process: exact on one device; under DDP each rank reports its own share of the subset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from locsens.checkpointing import record_model
from locsens.geo import geodesic_km_torch, sample_around, sigma_to_km
from locsens.metrics.tagging import TaggingAccuracy
from locsens.models.location_encoders import build_location_encoder
from locsens.scoring import ScoringEngine, chunk_pairs_for

FUSIONS = ("concat300", "raw2d", "zeroed", "dropout")
INITS = ("paper", "torch")


class LocSens(L.LightningModule):
    """Scores (image, tag, location) triplets; see the module docstring.

    Args:
        embed_dim: dimension E of the input image/tag embeddings (filled from the data by ``train()``).
        branch_dim: width of each modality branch (paper: 300).
        hidden: scorer widths, each Linear + GroupNorm(groups, gn_eps) + ReLU (paper: 2048,2048,2048,1024,512).
        fusion: one of ``FUSIONS``.
        location_dropout: drop probability of the location branch for ``fusion="dropout"``.
        progressive_warmup_epochs / progressive_ramp_epochs: location-free epochs, then a linear ramp.
        pairwise_products: append the branches' element-wise products to the scorer's input (see above).
        similarity_skip: add ``w * cos(image, tag)`` of the input embeddings to the score, ``w`` learned from 1
            (see above).
        location_encoder: ``latlon`` | ``wrap`` | ``sphere_multiscale`` | ``multiresolution_grid`` (+ num_scales,
            min/max_radius_km; the grid's grid_table_size rows x grid_features per level).
        location_lr_scale: learning-rate multiplier (and no weight decay) for the location encoder's own
            parameters (the learned grid), see ``parameter_groups``.
        init: ``paper`` (weights N(0, init_std), biases 0) or ``torch`` (PyTorch's default init).
        margin: margin of the ranking loss (paper: 0.1).
        num_negatives: K, checked against the batches.
        sigma: initial location-sampling scale in normalised units (0 = raw locations).
        optimizer: partial optimizer factory (``optimizer(params=...)``); scheduler: partial or None.
        val_ks: tagging A@k cut-offs; val_distances_km: retrieval distance thresholds;
        val_min_query_images: a retrieval query is kept if its tag has at least this many candidates;
        val_chunk_elements: bound on the [pairs x width] activations of one validation scoring chunk.
    """

    def __init__(
        self,
        embed_dim: int | None = None,
        branch_dim: int = 300,
        hidden: Sequence[int] = (2048, 2048, 2048, 1024, 512),
        groups: int = 32,
        gn_eps: float = 1e-3,
        fusion: str = "concat300",
        location_dropout: float = 0.5,
        progressive_warmup_epochs: int = 0,
        progressive_ramp_epochs: int = 0,
        pairwise_products: bool = False,
        similarity_skip: bool = False,
        location_encoder: str = "latlon",
        num_scales: int = 16,
        min_radius_km: float = 1.0,
        max_radius_km: float = 20000.0,
        grid_table_size: int = 2**14,
        grid_features: int = 4,
        location_lr_scale: float = 1.0,
        init: str = "paper",
        init_std: float = 0.01,
        margin: float = 0.1,
        num_negatives: int = 6,
        sigma: float = 0.0,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        val_ks: Sequence[int] = (1, 10, 50),
        val_distances_km: Sequence[float] = (25.0, 200.0),
        val_min_query_images: int = 10,
        val_chunk_elements: int = 2**24,
    ):
        super().__init__()
        if embed_dim is None:
            raise ValueError("model.embed_dim is null: train() fills it from datamodule.model_kwargs(); pass it when building LocSens directly")
        if fusion not in FUSIONS:
            raise ValueError(f"model.fusion={fusion!r}; expected one of {FUSIONS}")
        if init not in INITS:
            raise ValueError(f"model.init={init!r}; expected one of {INITS}")
        # plain lists (not Hydra ListConfig) so checkpoints load with torch.load(weights_only=True)
        hidden = [int(h) for h in hidden]
        val_ks = [int(k) for k in val_ks]
        val_distances_km = [float(d) for d in val_distances_km]
        if not hidden or any(h % groups for h in hidden):
            raise ValueError(f"model.hidden={hidden} must be non-empty and every width divisible by model.groups={groups}")
        if not 0.0 <= location_dropout <= 1.0:
            raise ValueError(f"model.location_dropout={location_dropout} must lie in [0, 1]")
        if sigma < 0:
            raise ValueError(f"model.sigma={sigma} must be >= 0")
        if location_lr_scale <= 0:
            raise ValueError(f"model.location_lr_scale={location_lr_scale} must be > 0")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.sigma = float(sigma)

        self.image_branch = nn.Linear(embed_dim, branch_dim)
        self.tag_branch = nn.Linear(embed_dim, branch_dim)
        self.location_encoder = build_location_encoder(location_encoder, num_scales, min_radius_km, max_radius_km, grid_table_size, grid_features)
        self.location_branch = nn.Linear(self.location_encoder.out_dim, branch_dim) if fusion in ("concat300", "dropout") else None
        self.location_dim = self.location_encoder.out_dim if fusion == "raw2d" else branch_dim
        # element-wise products appended after [loc | img | tag], in this order (pairwise_products)
        self.interactions: tuple[tuple[str, str], ...] = ()
        if pairwise_products:
            self.interactions = (("img", "tag"),) + ((("loc", "tag"), ("loc", "img")) if self.location_dim == branch_dim else ())

        # learned weight of the input embeddings' cosine added to the score (similarity_skip), else None
        self.similarity_skip = nn.Parameter(torch.ones(())) if similarity_skip else None

        layers: list[nn.Module] = []
        width = self.location_dim + 2 * branch_dim + len(self.interactions) * branch_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GroupNorm(groups, h, eps=gn_eps), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.scorer = nn.Sequential(*layers)
        if init == "paper":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)

        self.val_loss = MeanMetric()  # sample-weighted, sum-reduced states (exact under DDP)
        self.val_tagging = TaggingAccuracy(num_tags=1, ks=val_ks)  # resized to the vocabulary in on_validation_epoch_start
        self._val_store: dict[str, list[torch.Tensor]] = {}
        self._val_engine: ScoringEngine | None = None

    # ------------------------------------------------------------------------------------------
    # the model
    # ------------------------------------------------------------------------------------------
    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.relu(self.image_branch(F.normalize(img, dim=-1))), dim=-1)

    def encode_tag(self, tag: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.relu(self.tag_branch(F.normalize(tag, dim=-1))), dim=-1)

    def encode_location(self, lat_deg: torch.Tensor, lon_deg: torch.Tensor) -> torch.Tensor:
        """[B] degrees -> [B, location_dim] (300-d branch, raw encoder output, or zeros per fusion)."""
        if self.hparams.fusion == "zeroed":
            return torch.zeros((*lat_deg.shape, self.location_dim), dtype=self.scorer[0].weight.dtype, device=lat_deg.device)
        enc = self.location_encoder(lat_deg, lon_deg).to(self.scorer[0].weight.dtype)
        if self.location_branch is None:
            return enc
        return F.normalize(F.relu(self.location_branch(enc)), dim=-1)

    def score_encoded(self, loc_e: torch.Tensor, img_e: torch.Tensor, tag_e: torch.Tensor) -> torch.Tensor:
        """[..., L], [..., D], [..., D] -> [...] scores (leading dims flattened: GroupNorm reads dim 1 as channels)."""
        parts = {"loc": loc_e, "img": img_e, "tag": tag_e}
        x = torch.cat([loc_e, img_e, tag_e, *(parts[a] * parts[b] for a, b in self.interactions)], dim=-1)
        return self.scorer(x.reshape(-1, x.shape[-1])).view(x.shape[:-1])

    def similarity_term(self, img: torch.Tensor, tag: torch.Tensor) -> torch.Tensor | float:
        """``w * cos(img, tag)`` of the input embeddings [..., E] (similarity_skip), else 0."""
        if self.similarity_skip is None:
            return 0.0
        return self.similarity_skip * (F.normalize(img, dim=-1) * F.normalize(tag, dim=-1)).sum(-1)

    def forward(self, img: torch.Tensor, tag: torch.Tensor, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        scores = self.score_encoded(self.encode_location(lat, lon), self.encode_image(img), self.encode_tag(tag))
        return scores + self.similarity_term(img, tag)

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def location_drop_probability(self, epoch: int) -> float:
        """Probability that a positive group's location branch is zeroed in training at ``epoch``."""
        hp = self.hparams
        final = hp.location_dropout if hp.fusion == "dropout" else 0.0
        if epoch < hp.progressive_warmup_epochs:
            return 1.0
        if epoch < hp.progressive_warmup_epochs + hp.progressive_ramp_epochs:
            t = (epoch - hp.progressive_warmup_epochs + 1) / (hp.progressive_ramp_epochs + 1)
            return 1.0 + t * (final - 1.0)
        return final

    def ranking_loss(self, scores: torch.Tensor) -> torch.Tensor:
        """Margin ranking loss of ``scores [B, 1 + K]`` (positive at column 0), mean over B x K pairs."""
        return F.relu(self.hparams.margin - (scores[:, :1] - scores[:, 1:])).mean()

    def _group_scores(self, batch: dict, lat: torch.Tensor, lon: torch.Tensor, drop_p: float = 0.0) -> torch.Tensor:
        b, m, e = batch["image"].shape
        loc_e = self.encode_location(lat.reshape(-1), lon.reshape(-1)).view(b, m, -1)
        if drop_p > 0:
            keep = (torch.rand(b, 1, 1, device=loc_e.device) >= drop_p).to(loc_e.dtype)  # one draw per positive group
            loc_e = loc_e * keep
        img_e = self.encode_image(batch["image"])
        tag_e = self.encode_tag(batch["tag"])
        return self.score_encoded(loc_e, img_e, tag_e) + self.similarity_term(batch["image"], batch["tag"])

    @staticmethod
    def triplet_locations(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, M] locations of a batch's triplets (``lat``/``lon`` given per triplet [B, M], or per group [B])."""
        shape = batch["image"].shape[:2]
        lat, lon = batch["lat"], batch["lon"]
        return (lat, lon) if lat.ndim == 2 else (lat[:, None].expand(shape), lon[:, None].expand(shape))

    def sample_locations(self, lat: torch.Tensor, lon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time location sampling: each location independently replaced by a geodesic Gaussian draw
        around it with sigma_km = sigma_to_km(self.sigma) (global torch RNG, seeded by seed_everything)."""
        if self.sigma <= 0:
            return lat, lon
        return sample_around(lat, lon, sigma_to_km(self.sigma))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        b, m, _ = batch["image"].shape
        if m - 1 != self.hparams.num_negatives:
            raise ValueError(f"batch has {m - 1} negatives per positive, model.num_negatives={self.hparams.num_negatives}: set both from one config key")
        lat, lon = self.sample_locations(*self.triplet_locations(batch))
        scores = self._group_scores(batch, lat, lon, self.location_drop_probability(self.current_epoch))
        loss = self.ranking_loss(scores)
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=b)
        self.log("train/pair_accuracy", (scores[:, :1] > scores[:, 1:]).float().mean(), on_step=False, on_epoch=True, batch_size=b)
        return loss

    def parameter_groups(self) -> list[dict]:
        """One group, or with ``location_lr_scale != 1`` a second for the location encoder's own parameters
        (the learned grid's tables) at ``lr * location_lr_scale`` and no weight decay: a grid vertex
        only gets a gradient when a photo falls in its cell, so at the scorer's lr its features barely
        leave their near-zero init (Instant-NGP trains its tables at 1e-2 for the same reason)."""
        encoder = list(self.location_encoder.parameters())
        scale = self.hparams.location_lr_scale
        if not encoder or scale == 1.0:
            return [{"params": list(self.parameters())}]
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if base_lr is None:
            raise ValueError("model.location_lr_scale needs the optimizer's lr in its partial config (model.optimizer.lr)")
        ids = {id(p) for p in encoder}
        return [{"params": [p for p in self.parameters() if id(p) not in ids]},
                {"params": encoder, "lr": base_lr * scale, "weight_decay": 0.0}]

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("LocSens has no optimizer: set model.optimizer (a _partial_ optimizer config)")
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_model(self, checkpoint)  # model class + the stores' ids (locsens.checkpointing)

    # ------------------------------------------------------------------------------------------
    # validation (raw locations)
    # ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "tag_embeddings"):
            raise RuntimeError("LocSens validation needs a datamodule with tag_embeddings (locsens.data.triplets.TripletDataModule)")
        vocab = dm.tag_embeddings.to(self.device)
        if self.val_tagging.num_tags != vocab.shape[0]:
            self.val_tagging = TaggingAccuracy(num_tags=vocab.shape[0], ks=self.hparams.val_ks).to(self.device)
        self.val_tagging.reset()
        # the evaluation's exact engine, in fp32 (validation picks checkpoints: no reduced precision)
        chunk = chunk_pairs_for(self.hparams.val_chunk_elements, max(self.hparams.hidden), self.device)
        self._val_engine = ScoringEngine(self, dtype="fp32", tag_embeddings=vocab, chunk_pairs=chunk)
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
        """Location-sensitive P@10 over the val subset (candidates) with its one-tag queries."""
        st = self._val_store
        width = max(t.shape[1] for t in st["target"])
        target = torch.cat([F.pad(t, (0, width - t.shape[1]), value=-1) for t in st["target"]])
        image, lat, lon, query_tag = (torch.cat(st[k]) for k in ("image", "lat", "lon", "query_tag"))
        n = target.shape[0]
        has = torch.zeros((n, self.val_tagging.num_tags + 1), dtype=torch.bool, device=target.device)
        has.scatter_(1, torch.where(target < 0, self.val_tagging.num_tags, target), True)
        has = has[:, :-1]  # [N, V] candidate carries tag
        candidates_per_tag = has.sum(0)
        queries = torch.nonzero((query_tag >= 0) & (candidates_per_tag[query_tag.clamp(min=0)] >= self.hparams.val_min_query_images)).squeeze(1)
        self.log("val/retrieval_queries", float(len(queries)))
        if len(queries) == 0:
            return
        q_tag = query_tag[queries]
        _, top = self._val_engine.score_images(q_tag, lat[queries], lon[queries], image, k=10)
        carries = has[top, q_tag[:, None]]  # [Q, 10]
        dist = geodesic_km_torch(lat[queries][:, None], lon[queries][:, None], lat[top], lon[top])
        self.log("val/P@10", 100.0 * carries.float().mean().item())
        for d in self.hparams.val_distances_km:
            self.log(f"val/P@10@{d:g}km", 100.0 * (carries & (dist <= d)).float().mean().item())
