"""Training-data loading vs the MCC training step that consumes it, as a ratio measured in one run.

Builds random stores with the real writers (store.write_dataset_store / write_feature_store; the
feature store rows in another order than the dataset, as a real extraction's are) in a temporary
directory, then times
  1. the AgnosticDataModule's training DataLoader: features preloaded (the default when they fit
     under preload_max_bytes), and read per batch (preload_max_bytes=0, as at full scale where the
     store does not fit in memory), with 0 and 2 workers, from
       - the store as it is written now: ``features`` contiguous in the file, read through a memory map;
       - the same store with ``features`` chunked (the layout written before), read through HDF5;
  2. the MCC training step (forward, backward, SGD step) on batches of the same size;
and prints samples/s of each and the ratio loader / step (goal: >= 10x, so loading never stalls
training), and checks that both layouts give the same batches (same samples, same order).

Run: .venv/bin/python benchmarks/loader.py [--photos 200000] [--dim 512] [--tags 10000] [--batch 512]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from locsens.data.datamodule import AgnosticDataModule
from locsens.data.store import PLACE_LEVELS, write_dataset_store, write_feature_store
from locsens.models.mcc import MCC


def write_random_stores(out: Path, n: int, dim: int, n_tags: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 16, n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.minimum(rng.zipf(1.3, indptr[-1]) - 1, n_tags - 1).astype(np.int32)
    photo_id = rng.choice(10**11, n, replace=False)
    dataset = write_dataset_store(
        out / "dataset.h5",
        photo_id=photo_id,
        user_index=rng.integers(0, 1000, n),
        users=[f"{u}@N00" for u in range(1000)],
        lat=rng.uniform(-90, 90, n),
        lon=rng.uniform(-180, 180, n),
        tags_indptr=indptr,
        tags_indices=indices,
        places={lvl: ["x"] for lvl in PLACE_LEVELS},
        place_index={lvl: np.zeros(n, int) for lvl in PLACE_LEVELS},
        place_names=["x"],
        split=rng.choice(3, n, p=[0.9, 0.05, 0.05]),
        vocab=[f"tag{i}" for i in range(n_tags)],
        vocab_count=np.bincount(indices, minlength=n_tags),
        source="benchmark",
    )
    order = rng.permutation(n)
    blocks = (rng.standard_normal((min(65536, n - s), dim), dtype=np.float32) for s in range(0, n, 65536))
    features = write_feature_store(
        out / "features.h5", photo_id=photo_id[order], features=blocks, extractor="benchmark"
    )
    return dataset, features


def chunked_copy(features: Path, chunk_rows: int = 4096) -> Path:
    """The same feature store with ``features`` in HDF5 chunks of ``chunk_rows`` rows (the earlier layout)."""
    out = features.with_name("features_chunked.h5")
    shutil.copy(features, out)
    with h5py.File(out, "r+") as f:
        data = f["features"][:]
        del f["features"]
        f.create_dataset("features", data=data, chunks=(min(chunk_rows, len(data)), data.shape[1]))
    return out


def first_batches(dataset: Path, features: Path, batch: int, n: int = 3) -> list[np.ndarray]:
    dm = AgnosticDataModule(dataset, features, batch_size=batch, preload_max_bytes=0)
    dm.setup("fit")
    return [b["features"].numpy() for _, b in zip(range(n), dm.train_dataloader())]


def loader_rate(dataset: Path, features: Path, batch: int, preload: bool, workers: int, max_batches: int) -> float:
    dm = AgnosticDataModule(
        dataset,
        features,
        batch_size=batch,
        num_workers=workers,
        preload_max_bytes=10**12 if preload else 0,
        persistent_workers=False,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    n, t0 = 0, time.perf_counter()
    for i, b in enumerate(it):
        n += len(b["features"])
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)


def mcc_step_rate(dataset: Path, features: Path, batch: int, steps: int) -> float:
    dm = AgnosticDataModule(dataset, features, batch_size=batch)
    dm.setup("fit")
    kw = dm.model_kwargs()
    model = MCC(
        kw["input_dim"],
        kw["num_tags"],
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4),
    )
    optimizer = model.configure_optimizers()
    batches = [b for _, b in zip(range(4), dm.train_dataloader())]

    def step(b):
        loss = model.training_loss(b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(batches[0])
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--tags", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batches", type=int, default=100)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="locsens-bench-") as tmp:
        t0 = time.perf_counter()
        dataset, features = write_random_stores(Path(tmp), a.photos, a.dim, a.tags)
        print(
            f"random stores: {a.photos} photos x {a.dim}-d float32, {a.tags} tags ({time.perf_counter() - t0:.1f} s to write)"
        )
        step = mcc_step_rate(dataset, features, a.batch, a.steps)
        print(
            f"MCC training step (D={a.dim}, V={a.tags}, batch {a.batch}, {torch.get_num_threads()} threads): {step:10.0f} samples/s"
        )
        chunked = chunked_copy(features)
        same = all(
            np.array_equal(x, y)
            for x, y in zip(first_batches(dataset, features, a.batch), first_batches(dataset, chunked, a.batch))
        )
        print(f"contiguous (memory-mapped) and chunked (HDF5) stores give the same batches: {same}")
        for label, store, preload, workers in (
            ("preloaded", features, True, 0),
            ("per batch, memory map", features, False, 0),
            ("per batch, memory map", features, False, 2),
            ("per batch, HDF5 chunked", chunked, False, 0),
            ("per batch, HDF5 chunked", chunked, False, 2),
        ):
            rate = loader_rate(dataset, store, a.batch, preload, workers, a.batches)
            print(
                f"loader, {label:24s} {workers} workers: {rate:10.0f} samples/s   ratio loader/step = {rate / step:6.1f}x"
            )


if __name__ == "__main__":
    main()
