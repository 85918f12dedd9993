"""MCC: multi-class classification with one random target tag per draw (the paper's best agnostic model).

features -> Linear(D, 300) -> Linear(300, V), no nonlinearity in between; softmax cross-entropy
where the target is ONE tag of the image drawn uniformly from its tag list (duplicates count, as the
paper's loader drew from the raw list) every time the image is drawn. The draw uses the batch's
``draw`` in [0, 1), a pure function of (seed, epoch, dataset row) (see locsens.data.datamodule), so
training reproduces under a seed whatever the number of workers.

Embeddings: image = the 300-d output of the first layer; tag = the tag's row of the last layer's
weight (bias ignored); compared by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from locsens.models.agnostic import AgnosticTagger


def draw_target_tags(tags: Tensor, draw: Tensor) -> Tensor:
    """One tag per row of ``tags`` [B, T] (-1 padded): position floor(draw * n_tags) of the row's list."""
    n_tags = (tags >= 0).sum(1)
    if (n_tags == 0).any():
        raise ValueError("an image without tags reached MCC; the dataset store keeps only images with 1-15 tags")
    position = (draw.double() * n_tags).long().clamp_max(n_tags - 1)
    return tags.gather(1, position[:, None]).squeeze(1)


class MCC(AgnosticTagger):
    similarity = "cosine"

    def __init__(
        self,
        input_dim: int,
        num_tags: int,
        embed_dim: int = 300,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__(num_tags, optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.embed = nn.Linear(input_dim, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_tags)

    def forward(self, features: Tensor) -> Tensor:
        """Logits [B, V]."""
        return self.classifier(self.embed(features))

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        target = draw_target_tags(batch["tags"], batch["draw"])
        return F.cross_entropy(self(batch["features"]), target)

    def image_embedding(self, features: Tensor) -> Tensor:
        return self.embed(features)

    def tag_embedding(self) -> Tensor:
        return self.classifier.weight


__all__ = ["MCC", "draw_target_tags"]
