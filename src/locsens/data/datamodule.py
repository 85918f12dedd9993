"""The location-agnostic DataModule: image features + tags + location, batch-at-a-time from HDF5.

Throughput design: the DataLoader runs with ``batch_size=None`` over ``locsens.data.sampling.EpochBatchSampler``,
which yields one rank's batch of row positions; one ``__getitem__`` then assembles a whole batch with one
sorted HDF5 read (or one in-memory gather when the features were preloaded because they fit under
``preload_max_bytes``). There is no per-sample Python work, so loading runs far ahead of the models
(``benchmarks/loader.py`` measures the ratio).

Determinism: the sampler's permutation is seeded by ``(seed, epoch)`` and every sample carries a
``draw`` in [0, 1) computed by a counter-based hash of ``(seed, epoch, dataset row)``. Models that
need a per-sample random choice (MCC's random target tag) use it, so draws reproduce exactly and do
not depend on ``num_workers`` or on which worker assembled the batch.

Distributed runs: the sampler shards each epoch's permutation by the trainer's rank itself, so use
``use_distributed_sampler: false`` in the Trainer (conf/trainer/ddp.yaml does).
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from locsens.data.sampling import EpochBatch, epoch_loader, sample_draws
from locsens.data.store import SPLIT_NAMES, DatasetStore, FeatureStore, require_paired
from locsens.data.tagsets import padded

log = logging.getLogger(__name__)


class FeatureBatches(Dataset):
    """Batch-level dataset: item ``(epoch, positions)`` -> a dict of batch tensors.

    ``positions`` index this split's rows. Features come from ``features_in_memory`` (aligned with
    the split's rows) when given, else from the feature store with one sorted read per batch.
    """

    def __init__(
        self,
        dataset_rows: np.ndarray,
        feature_rows: np.ndarray,
        dataset: DatasetStore,
        features: FeatureStore,
        features_in_memory: np.ndarray | None,
        seed: int,
    ):
        self.dataset_rows = dataset_rows
        self.feature_rows = feature_rows
        self.tags_indptr, self.tags_indices = dataset.tags_indptr, dataset.tags_indices
        self.lat, self.lon = dataset.lat, dataset.lon
        self.features = features
        self.features_in_memory = features_in_memory
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset_rows)

    def __getitem__(self, item: EpochBatch) -> dict[str, torch.Tensor]:
        epoch, positions = item.epoch, item.positions
        rows = self.dataset_rows[positions]
        if self.features_in_memory is not None:
            feats = self.features_in_memory[positions]
        else:
            feats = self.features.read(self.feature_rows[positions])
        return {
            "features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
            "tags": torch.from_numpy(padded(self.tags_indptr, self.tags_indices, rows)),
            "lat": torch.from_numpy(self.lat[rows].astype(np.float32)),
            "lon": torch.from_numpy(self.lon[rows].astype(np.float32)),
            "row": torch.from_numpy(rows.astype(np.int64)),
            "draw": torch.from_numpy(sample_draws(self.seed, epoch, rows)),
        }


class AgnosticDataModule(L.LightningDataModule):
    """Dataset store + feature store joined by photo id; train/val/test from the store's ``split``.

    Photos without valid features are dropped (the count is logged and kept in ``n_without_features``).
    ``preload_max_bytes``: when all kept features (float32) fit, they are read into memory once in
    ``setup`` (shared copy-on-write with forked workers); otherwise batches are read from HDF5.
    """

    def __init__(
        self,
        dataset_path: str,
        features_path: str,
        batch_size: int = 512,
        num_workers: int = 0,
        preload_max_bytes: int = 2_000_000_000,
        seed: int = 0,
        eval_batch_size: int | None = None,
        persistent_workers: bool = True,
    ):
        super().__init__()
        self.dataset_path, self.features_path = str(dataset_path), str(features_path)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.persistent_workers = num_workers, persistent_workers
        self.preload_max_bytes, self.seed = preload_max_bytes, seed
        self.dataset: DatasetStore | None = None
        self.splits: dict[str, FeatureBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = DatasetStore(self.dataset_path)
        self.features = FeatureStore(self.features_path)
        require_paired(self.dataset, self.features)
        feature_rows = self.features.rows_for(self.dataset.photo_id)
        has_features = feature_rows >= 0
        self.n_without_features = int((~has_features).sum())
        if self.n_without_features:
            log.warning(
                "%s: %d of %d photos have no valid features in %s and are dropped",
                self.dataset_path,
                self.n_without_features,
                len(self.dataset),
                self.features_path,
            )
        kept = np.flatnonzero(has_features)
        preload = len(kept) * self.features.dim * 4 <= self.preload_max_bytes
        all_features = self.features.read_all() if preload else None
        for split_id, name in enumerate(SPLIT_NAMES):
            rows = kept[self.dataset.split[kept] == split_id]
            in_memory = all_features[feature_rows[rows]] if preload else None
            self.splits[name] = FeatureBatches(
                rows, feature_rows[rows], self.dataset, self.features, in_memory, self.seed
            )
        log.info(
            "%s: %s photos with features (train/val/test), features %s",
            self.dataset_path,
            "/".join(str(len(self.splits[s])) for s in SPLIT_NAMES),
            "preloaded" if preload else "read from HDF5",
        )

        n_train = len(self.splits["train"])
        if n_train < self.batch_size or len(self.splits["val"]) == 0:
            raise ValueError(
                f"{self.dataset_path}: {n_train} training and {len(self.splits['val'])} validation photos with "
                f"features: {'no training batch of data.batch_size=' + str(self.batch_size) if n_train < self.batch_size else 'no validation photo'} "
                f"(per split: {', '.join(f'{s} {len(self.splits[s])}' for s in SPLIT_NAMES)}); "
                "lower data.batch_size or ingest more photos"
            )

    @property
    def vocab(self) -> list[str]:
        return self.dataset.vocab

    def lineage(self) -> dict:
        """What a model trained on this data is made from: the content ids of the two stores."""
        return {
            "dataset": {"id": self.dataset.content_id, "path": self.dataset_path},
            "features": {"id": self.features.content_id, "path": self.features_path},
        }

    def model_kwargs(self) -> dict[str, int]:
        """Dimensions the models take from the data (train() fills null model config keys with them)."""
        return {"input_dim": self.features.dim, "num_tags": self.dataset.num_tags}

    def describe(self) -> str:
        return f"dataset store {self.dataset_path} + feature store {self.features_path}"

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        size = self.batch_size if shuffle else self.eval_batch_size
        return epoch_loader(
            self.splits[split], size, shuffle, self.seed, self.trainer, self.num_workers, self.persistent_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


__all__ = ["AgnosticDataModule", "FeatureBatches"]
