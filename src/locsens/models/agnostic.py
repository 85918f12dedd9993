"""What MLC, MCC and HER share: optimiser wiring, validation tagging metrics and the export interface.

A subclass defines
  * ``training_loss(batch) -> Tensor`` (also used for ``val/loss``),
  * ``image_embedding(features) -> [B, d]`` and ``tag_embedding() -> [V, d]``: what export writes,
  * ``similarity``: "cosine" or "dot", how the two are compared,
and tag scores for validation follow from those, so the validation A@k of a run is exactly what the
evaluation computes from the exported store (``tag_scores``).

Optimiser and scheduler are Hydra ``_partial_`` callables (``optimizer(params=...)``,
``scheduler(optimizer=...)``); they are not saved as hyperparameters, so a checkpoint reloads with
``load_from_checkpoint(path)`` alone (for inference/export: it has no optimiser then).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from locsens.checkpointing import record_model
from locsens.metrics.tagging import TaggingAccuracy
from locsens.models.optim import configure

VAL_KS = (1, 10, 50)


def vocab_sha256(vocab: list[str]) -> str:
    """Fingerprint of a vocabulary (order matters: class index = position)."""
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


class AgnosticTagger(L.LightningModule):
    similarity: str = "cosine"

    def __init__(self, num_tags: int, optimizer: Callable | None, scheduler: Callable | None):
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_tagging = TaggingAccuracy(num_tags, ks=VAL_KS)
        # val/loss as a sample-weighted mean with sum-reduced states: exact under DDP (Lightning's own
        # sync_dist mean divides an integer-truncated sample count, biased by n / (n - 1) on odd splits)
        self.val_loss = MeanMetric()

    # ---- what subclasses define ------------------------------------------------------------
    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def image_embedding(self, features: Tensor) -> Tensor:
        raise NotImplementedError

    def tag_embedding(self) -> Tensor:
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------
    def tag_scores(self, features: Tensor) -> Tensor:
        """Scores [B, V] of every vocabulary tag, as the evaluation computes them from the export."""
        image, tag = self.image_embedding(features), self.tag_embedding()
        if self.similarity == "cosine":
            image, tag = F.normalize(image, dim=1), F.normalize(tag, dim=1)
        return image @ tag.T

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["features"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        n = len(batch["features"])
        self.val_loss.update(self.training_loss(batch), weight=n)
        self.log("val/loss", self.val_loss, batch_size=n)
        self.val_tagging.update(self.tag_scores(batch["features"]), batch["tags"])

    def on_validation_epoch_end(self) -> None:
        result = self.val_tagging.compute()
        for k in VAL_KS:
            self.log(f"val/A@{k}", result[f"A@{k}"], prog_bar=k == 10)
        self.val_tagging.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the vocabulary export checks against (the model class and the stores' ids are recorded
        by locsens.checkpointing.record_model)."""
        record_model(self, checkpoint)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "vocab"):
            checkpoint["locsens_vocab_sha256"] = vocab_sha256(datamodule.vocab)

    def configure_optimizers(self):
        return configure(self.optimizer_factory, self.scheduler_factory, self.parameters(), type(self).__name__)
