"""Export a trained location-agnostic model's embeddings into a ``locsens.embeddings`` store.

``export_embeddings(checkpoint_path, dataset_path, features_path, out_path)`` writes the image
embedding of EVERY photo of the dataset store (all splits, dataset order) and the embedding of every
vocabulary tag, with attributes model (mcc / mlc / her), checkpoint_sha256, dim, similarity and
dataset_path. Scores are ``sim(image, tag)`` with the store's similarity, and they equal the
module's ``tag_scores`` (hence its validation ranking):
  * MCC: image = 300-d output, tag = classifier weight row, "cosine".
  * HER: image = predicted word vector, tag = word vector, "cosine" (or the "dot" form of
    locsens.models.her when some tags have no word vector, so those rank last).
  * MLC: image = [features, 1], tag = [W, b], "dot": image @ tag.T equals MLC's logits exactly.

Photos without valid features: refused, with their count and first ids. Every downstream consumer
(LocSens training, the evaluation) needs a real embedding for each photo of the store, and a made-up
one (zeros) would be silently ranked; re-extract the missing features, or ingest without them.

Entry point: ``python export.py checkpoint=<run>/checkpoints/last.ckpt`` (conf/export.yaml); the
output defaults to ``${paths.world_dir}/embeddings/<model>.h5``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from locsens.artifacts import file_ref, require_made_from
from locsens.checkpointing import load_model
from locsens.data.store import DatasetStore, FeatureStore, StoreError, require_paired, write_embedding_store
from locsens.models.agnostic import AgnosticTagger, vocab_sha256

log = logging.getLogger(__name__)


def load_tagger(checkpoint_path: str | Path) -> AgnosticTagger:
    """The MLC / MCC / HER model saved in a checkpoint written by train() (safe load, allow-listed class)."""
    model, ckpt = load_model(checkpoint_path, expect="agnostic")
    model.vocab_sha256 = ckpt.get("locsens_vocab_sha256")
    model.made_from = ckpt["locsens"].get("made_from") or {}
    return model


@torch.no_grad()
def export_embeddings(
    checkpoint_path: str | Path,
    dataset_path: str | Path,
    features_path: str | Path,
    out_path: str | Path | None = None,
    overwrite: bool = False,
    batch_size: int = 8192,
) -> Path:
    """Write the embeddings store of a checkpoint (see the module docstring); returns its path.

    ``out_path`` None -> ``<dataset dir>/embeddings/<model>.h5``. The checkpoint must have been trained
    on these very stores (content ids); the store records the checkpoint's sha256 and both stores' ids.
    """
    model = load_tagger(checkpoint_path)
    dataset, features = DatasetStore(dataset_path), FeatureStore(features_path)
    require_paired(dataset, features)
    name = type(model).__name__.lower()
    fix = f"export it against the stores it was trained on, or train {name.upper()} on these (`python train.py experiment={name} ...`)"
    for role, what, store, path in (
        ("dataset", "dataset store", dataset, dataset_path),
        ("features", "feature store", features, features_path),
    ):
        actual = {"id": store.content_id, "path": str(path)}
        require_made_from(f"checkpoint {checkpoint_path}", model.made_from.get(role), what, actual, fix)
    if dataset.num_tags != model.hparams.num_tags:
        raise StoreError(
            f"{dataset_path}: vocabulary has {dataset.num_tags} tags but checkpoint {checkpoint_path} was trained with num_tags={model.hparams.num_tags}"
        )
    if model.vocab_sha256 is not None and model.vocab_sha256 != vocab_sha256(dataset.vocab):
        raise StoreError(
            f"{dataset_path}: vocabulary ({dataset.num_tags} tags) differs from the one checkpoint {checkpoint_path} was trained on (same size, other tags or order)"
        )
    if features.dim != model.hparams.input_dim:
        raise StoreError(
            f"{features_path}: features are {features.dim}-d but checkpoint {checkpoint_path} expects input_dim={model.hparams.input_dim}"
        )
    rows = features.rows_for(dataset.photo_id)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        raise StoreError(
            f"{features_path}: {len(missing)} of {len(dataset)} photos of {dataset_path} have no valid features "
            f"(first photo ids: {dataset.photo_id[missing[:5]].tolist()}); every photo needs an embedding"
        )
    image = np.empty((len(dataset), model.tag_embedding().shape[1]), np.float32)
    for start in range(0, len(dataset), batch_size):
        block = torch.from_numpy(features.read(rows[start : start + batch_size]))
        image[start : start + len(block)] = model.image_embedding(block).numpy()
    out_path = Path(out_path) if out_path is not None else Path(dataset_path).parent / "embeddings" / f"{name}.h5"
    checkpoint = file_ref(checkpoint_path)
    made_from = {
        "checkpoint": checkpoint,
        "dataset": {"id": dataset.content_id, "path": str(dataset_path)},
        "features": {"id": features.content_id, "path": str(features_path)},
    }
    path = write_embedding_store(
        out_path,
        photo_id=dataset.photo_id,
        image=image,
        tag=model.tag_embedding().numpy(),
        vocab=dataset.vocab,
        model=name,
        checkpoint_sha256=checkpoint["sha256"],
        similarity=model.similarity,
        dataset_path=str(dataset_path),
        made_from=made_from,
        overwrite=overwrite,
    )
    log.info(
        "exported %s embeddings (%d photos, %d tags, %d-d, %s) to %s",
        name,
        len(dataset),
        dataset.num_tags,
        image.shape[1],
        model.similarity,
        path,
    )
    return path
