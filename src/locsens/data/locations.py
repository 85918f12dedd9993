"""Training data of location priors (``locsens.models.geo_prior``): photos' locations and tag sets only,
from the dataset store (no features, no embeddings).

Batches (``EpochBatchSampler``: seeded epochs, sharded over DDP ranks)::

    lat, lon  float32 [B]      the photos' locations (degrees)
    target    int64   [B, T]   their vocabulary tags, -1 padded
    seed      int64   []       seeds the batch's random pseudo-negative locations: a pure function of
                               (seed, epoch, batch), so runs reproduce whatever the workers
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from locsens.data.sampling import EpochBatch, epoch_loader
from locsens.data.store import DatasetStore
from locsens.data.tagsets import padded


class LocationBatches(Dataset):
    def __init__(self, rows: np.ndarray, dataset: DatasetStore, seed: int):
        self.rows, self.seed = rows, seed
        self.indptr, self.indices = dataset.tags_indptr, dataset.tags_indices
        self.lat, self.lon = dataset.lat, dataset.lon

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: EpochBatch) -> dict[str, torch.Tensor]:
        rows = self.rows[item.positions]
        seed = np.random.default_rng([self.seed, item.epoch, item.index, item.rank]).integers(2**62)
        return {
            "lat": torch.from_numpy(self.lat[rows].astype(np.float32)),
            "lon": torch.from_numpy(self.lon[rows].astype(np.float32)),
            "target": torch.from_numpy(padded(self.indptr, self.indices, rows)),
            "seed": torch.tensor(int(seed)),
        }


class LocationDataModule(L.LightningDataModule):
    """Train / val photos (with at least one tag) of a dataset store, for a location prior."""

    def __init__(
        self, dataset_path: str, batch_size: int = 2048, val_batch_size: int = 2048, seed: int = 0, num_workers: int = 0
    ):
        super().__init__()
        self.dataset_path, self.batch_size, self.val_batch_size = dataset_path, batch_size, val_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.dataset: DatasetStore | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = ds = DatasetStore(self.dataset_path)
        has_tags = np.diff(ds.tags_indptr) > 0
        self.splits = {}
        for split in ("train", "val"):
            rows = ds.split_rows(split)
            rows = rows[has_tags[rows]]
            if len(rows) == 0:
                raise ValueError(
                    f"{self.dataset_path}: no {split} photo with a tag; a location prior needs both splits"
                )
            self.splits[split] = LocationBatches(rows, ds, self.seed + (split == "val"))
        if len(self.splits["train"]) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is more than the {len(self.splits['train'])} training photos of "
                f"{self.dataset_path}: no whole batch to train on; lower data.batch_size"
            )

    def lineage(self) -> dict:
        return {"dataset": {"id": self.dataset.content_id, "path": self.dataset_path}}

    def model_kwargs(self) -> dict[str, int]:
        return {"num_tags": self.dataset.num_tags}

    def describe(self) -> str:
        return f"dataset store {self.dataset_path}"

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        size = self.batch_size if shuffle else self.val_batch_size
        return epoch_loader(self.splits[split], size, shuffle, self.seed, self.trainer, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
