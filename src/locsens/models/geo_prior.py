"""A learned presence-only tag prior p(tag | location) (geo_prior, Mac Aodha et al. ICCV 2019; SINR, Cole
et al. ICML 2023), trained on the photos' locations and tags alone (no pixels).

Net (``GeoPriorNet``): a location encoder (any of ``locsens.models.location_encoders``) -> Linear(L, width)
+ ReLU -> ``depth`` residual blocks ``x + ReLU(Linear(ReLU(Linear(x))))`` -> one logit per vocabulary tag
(batched over the vocabulary: one [width, V] matmul). ``sigmoid(logit_t(x))`` is the probability that a
photo taken at x carries tag t.

Loss (:func:`presence_only_loss`): SINR's "full assume-negative" loss. A training photo at x with tag set T
gives ``pos_weight * -log s_t(x)`` for t in T and ``-log(1 - s_t(x))`` for every other tag (a photo that
lacks a tag is weak evidence of its absence there: Flickr photos are not exhaustively tagged, hence
the small weight of negatives against ``pos_weight``), plus, at a location r drawn uniformly on the
sphere for each photo, ``-log(1 - s_t(r))`` for every tag: pseudo-negatives that push the prior down
where nobody takes photos, which photo locations alone never do. Mean over photos and tags. Why this one:
our data has several positives per photo and photo-level absences, which the full AN loss uses, and
the random-location term is what makes a range map a range map (SINR's best loss on presence-only data).

Validation: ``val/A@k`` of tagging by the prior alone on the val split (its ranking of the vocabulary at
each val photo's location) and ``val/loss``; the checkpoint with the best ``val/A@10`` is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from locsens.checkpointing import record_model
from locsens.metrics.tagging import TaggingAccuracy
from locsens.models.optim import configure, scaled_parameter_groups

DEFAULT_ENCODER = {"_target_": "locsens.models.location_encoders.SphereMultiScaleEncoder", "num_scales": 16}


def presence_only_loss(
    logits: torch.Tensor,
    present: torch.Tensor,
    random_logits: torch.Tensor,
    pos_weight: float,
    tag_weight: torch.Tensor | None = None,
    num_tags: int | None = None,
) -> torch.Tensor:
    """SINR's full assume-negative loss (module docstring): ``logits [B, V]`` at the photos' locations,
    ``present [B, V]`` bool (the photos' tags), ``random_logits [B', V]`` at uniform random locations; the
    mean over photos and tags.

    With a sample of the vocabulary (columns = S tags), ``tag_weight [S]`` is each column's inverse
    inclusion probability and ``num_tags`` the vocabulary size: the same mean, estimated without bias."""
    at_photos = torch.where(present, pos_weight * -F.logsigmoid(logits), -F.logsigmoid(-logits))
    at_random = -F.logsigmoid(-random_logits)
    if tag_weight is None:
        return (at_photos.sum() + at_random.sum()) / logits.numel()
    total = (at_photos * tag_weight).sum() + (at_random * tag_weight).sum() * (len(logits) / max(1, len(random_logits)))
    return total / (len(logits) * num_tags)


def random_locations(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points uniform on the sphere (uniform z and longitude), degrees."""
    z = torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1
    lon = torch.rand(n, generator=generator, dtype=torch.float64) * 360 - 180
    return torch.rad2deg(torch.asin(z)).float(), lon.float()


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.a, self.b = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.b(F.relu(self.a(x))))


class GeoPriorNet(nn.Module):
    """location -> one logit per tag (module docstring); built from plain values (checkpoint hparams)."""

    def __init__(self, num_tags: int, location_encoder: dict = DEFAULT_ENCODER, width: int = 256, depth: int = 4):
        super().__init__()
        from locsens.models.locsens import build_part, plain

        self.spec = {
            "num_tags": int(num_tags),
            "location_encoder": plain(location_encoder),
            "width": width,
            "depth": depth,
        }
        self.location_encoder = build_part(plain(location_encoder), "prior.location_encoder")
        self.trunk = nn.Sequential(
            nn.Linear(self.location_encoder.out_dim, width), nn.ReLU(), *(ResidualBlock(width) for _ in range(depth))
        )
        self.head = nn.Linear(width, int(num_tags))

    def features(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.location_encoder(lat, lon).to(self.head.weight.dtype))

    def forward(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        """``[N]`` degrees -> logits ``[N, V]``."""
        return self.head(self.features(lat, lon))

    def log_prior(self, lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
        """``log sigmoid(logit)`` ``[N, V]``: the log presence probability of every tag."""
        return F.logsigmoid(self(lat, lon))

    def pair_log_prior(self, features: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """``log sigmoid(logit_tag)`` of ``features [N, width]`` (from :meth:`features`) and ``tags [N]`` ids."""
        logit = (features * self.head.weight.index_select(0, tags)).sum(-1) + self.head.bias.index_select(0, tags)
        return F.logsigmoid(logit)


class GeoPrior(L.LightningModule):
    """Trains a :class:`GeoPriorNet` with :func:`presence_only_loss` (module docstring).

    Args:
        num_tags: vocabulary size (filled from the data). location_encoder / width / depth: the net.
        pos_weight: weight of a present tag against an absent one (SINR's lambda; 2048 there).
        random_per_photo: uniform random pseudo-negative locations per training photo.
        sampled_tags: None = every tag in every step (SINR); else each step's loss reads the batch's tags and
            this many others drawn uniformly, reweighted to the full mean (unbiased; ~V / sampled_tags cheaper).
        optimizer / scheduler: config nodes (``locsens.models.optim``). val_ks: tagging cut-offs.
    """

    def __init__(
        self,
        num_tags: int | None = None,
        location_encoder: dict = DEFAULT_ENCODER,
        width: int = 256,
        depth: int = 4,
        pos_weight: float = 2048.0,
        random_per_photo: int = 1,
        sampled_tags: int | None = None,
        optimizer: Any = None,
        scheduler: Any = None,
        val_ks: Sequence[int] = (1, 10, 50),
    ):
        super().__init__()
        if num_tags is None:
            raise ValueError("model.num_tags is null: train() fills it from the data; pass it when building GeoPrior")
        if pos_weight <= 0 or random_per_photo < 0:
            raise ValueError(f"model.pos_weight={pos_weight} must be > 0 and model.random_per_photo >= 0")
        from locsens.models.locsens import plain

        location_encoder = plain(location_encoder)
        val_ks = [int(k) for k in val_ks]
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_spec, self.scheduler_spec = optimizer, scheduler
        self.net = GeoPriorNet(num_tags, location_encoder, width, depth)
        self.val_loss = MeanMetric()
        self.val_tagging = TaggingAccuracy(num_tags=num_tags, ks=val_ks)

    def _loss(self, batch: dict, seed: int, sample: bool = True, tag_seed: int | None = None) -> torch.Tensor:
        """The loss of a batch; its random locations from ``seed``, its tag sample from ``tag_seed``
        (default ``seed + 1``)."""
        tags = batch["target"]
        v = self.net.head.out_features
        r_lat, r_lon = random_locations(len(tags) * self.hparams.random_per_photo, torch.Generator().manual_seed(seed))
        generator = torch.Generator().manual_seed(seed + 1 if tag_seed is None else tag_seed)
        feats = self.net.features(batch["lat"], batch["lon"])
        r_feats = self.net.features(r_lat.to(feats.device), r_lon.to(feats.device))
        m = self.hparams.sampled_tags
        columns, weight, seen = None, None, None
        if sample and m is not None and m < v:
            seen = torch.unique(tags[tags >= 0])
            drawn = torch.randint(0, v, (int(m),), generator=generator).to(seen.device)
            others = drawn[~torch.isin(drawn, seen)].unique()
            columns = torch.cat([seen, others])
            # a batch tag is always in; any other with probability ~ |others| / (V - |seen|)
            weight = torch.ones(len(columns), device=feats.device)
            weight[len(seen) :] = (v - len(seen)) / max(1, len(others))
        head_w = self.net.head.weight if columns is None else self.net.head.weight.index_select(0, columns)
        head_b = self.net.head.bias if columns is None else self.net.head.bias.index_select(0, columns)
        logits, random_logits = F.linear(feats, head_w, head_b), F.linear(r_feats, head_w, head_b)
        present = torch.zeros_like(logits, dtype=torch.bool)
        col = tags if columns is None else torch.searchsorted(seen, tags.clamp_min(0))  # seen: sorted, first
        rows = torch.arange(len(tags), device=tags.device)[:, None].expand_as(tags)
        present[rows[tags >= 0], col[tags >= 0]] = True
        return presence_only_loss(logits, present, random_logits, self.hparams.pos_weight, weight, v)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, int(batch["seed"]))
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(batch["lat"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_tagging.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self._loss(batch, int(batch["seed"]), sample=False)  # validation: the exact loss over every tag
        self.val_loss.update(loss, weight=len(batch["lat"]))
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=len(batch["lat"]))
        self.val_tagging.update(self.net(batch["lat"], batch["lon"]), batch["target"])

    def on_validation_epoch_end(self) -> None:
        for name, value in self.val_tagging.compute().items():
            if name.startswith("A@"):
                self.log(f"val/{name}", float(value), prog_bar=name == "A@10")

    def configure_optimizers(self):
        return configure(
            self.optimizer_spec, self.scheduler_spec, scaled_parameter_groups(self, self.optimizer_spec), "GeoPrior"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_model(self, checkpoint)


__all__ = ["GeoPrior", "GeoPriorNet", "presence_only_loss", "random_locations"]
