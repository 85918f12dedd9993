"""MLC: multi-label classification, sigmoid + binary cross-entropy on the multi-hot tag vector.

features -> Linear(D, V), or with ``bottleneck_dim`` set, Linear(D, b) -> Linear(b, V) (no
nonlinearity, like MCC). ``pos_weight`` (a float applied to every tag's positive term, off by
default) is the class-balancing option the paper tried; the released code referenced it undefined.

Export: MLC ranks by its raw logits, so the embedding store uses similarity "dot" with
image = [h, 1] and tag = [W, b] (h = features, or the bottleneck output): image @ tag.T equals the
logits exactly, and the evaluation needs no MLC-specific code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from locsens.models.agnostic import AgnosticTagger


def multi_hot(tags: Tensor, num_tags: int) -> Tensor:
    """Float [B, V] with 1 at every tag of each row of the -1 padded ``tags`` [B, T]."""
    target = torch.zeros(len(tags), num_tags + 1, device=tags.device)
    target.scatter_(1, torch.where(tags >= 0, tags, num_tags), 1.0)
    return target[:, :num_tags]


class MLC(AgnosticTagger):
    similarity = "dot"

    def __init__(
        self,
        input_dim: int,
        num_tags: int,
        bottleneck_dim: int | None = None,
        pos_weight: float | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__(num_tags, optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.bottleneck = nn.Linear(input_dim, bottleneck_dim) if bottleneck_dim else nn.Identity()
        self.classifier = nn.Linear(bottleneck_dim or input_dim, num_tags)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.full((num_tags,), float(pos_weight)), persistent=False
        )

    def forward(self, features: Tensor) -> Tensor:
        """Logits [B, V]."""
        return self.classifier(self.bottleneck(features))

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        target = multi_hot(batch["tags"], self.hparams.num_tags)
        return F.binary_cross_entropy_with_logits(self(batch["features"]), target, pos_weight=self.pos_weight)

    def image_embedding(self, features: Tensor) -> Tensor:
        h = self.bottleneck(features)
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)

    def tag_embedding(self) -> Tensor:
        return torch.cat([self.classifier.weight, self.classifier.bias[:, None]], dim=1)
