"""Batch sampling, the one home for both datamodules: epochs of seeded batches, sharded over DDP ranks,
and counter-based per-sample randomness.

``EpochBatchSampler`` yields :class:`EpochBatch` items for a DataLoader with ``batch_size=None``; the dataset
assembles a whole batch per item (one sorted read, or one vectorised negative draw). Batch ``b`` of an
epoch is the slice ``[b * B * W, (b + 1) * B * W)`` of the epoch's order (a permutation seeded by
(seed, epoch), or the identity), and rank ``r`` of ``W`` takes every W-th item of it: the W rank batches of
size B together are exactly the one-process batch of size B * W, so averaged DDP gradients equal the
one-process gradient. ``drop_last`` (training) keeps only whole batches, so every rank takes the same
number of steps; without it (evaluation) every item goes to exactly one rank, none dropped or duplicated
(as a padding DistributedSampler would), so sum-reduced metrics equal a single process's. The sampler is
a generator: the epoch is read at the first batch, after Lightning's ``set_epoch`` (a resumed fit creates
the iterator before it sets the epoch). Lightning must not inject a DistributedSampler
(``use_distributed_sampler: false``, conf/trainer/ddp.yaml).

``sample_draws(seed, epoch, rows)``: a uniform [0, 1) per row, a pure function of (seed, epoch, row), so a
per-sample random choice (MCC's target tag) does not depend on batches, workers or ranks.

>>> [item.positions.tolist() for item in EpochBatchSampler(5, 2, shuffle=False, seed=0, drop_last=False)]
[[0, 1], [2, 3], [4]]
>>> [item.positions.tolist() for item in EpochBatchSampler(5, 1, shuffle=False, seed=0, drop_last=True, rank=1, world_size=2)]
[[1], [3]]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class EpochBatch(NamedTuple):
    """One rank's batch: ``positions`` (item indices) = ``batch[rank::world_size]`` of the one-process ``batch``."""

    epoch: int
    index: int
    batch: np.ndarray
    rank: int = 0
    world_size: int = 1

    @property
    def positions(self) -> np.ndarray:
        return self.batch[self.rank :: self.world_size]


class EpochBatchSampler:
    """Seeded epochs of ``batch_size``-item batches over ``n`` items, sharded by rank (module docstring).

    ``fixed_epoch``: always that epoch (validation draws that do not change between epochs)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
        fixed_epoch: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.fixed_epoch = fixed_epoch
        self.epoch = 0 if fixed_epoch is None else fixed_epoch

    def set_epoch(self, epoch: int) -> None:
        """Shuffled batches follow the epoch; unshuffled ones keep epoch 0, so their per-sample draws (and
        e.g. MCC's val/loss) are the same every epoch."""
        if self.shuffle and self.fixed_epoch is None:
            self.epoch = epoch

    def order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.global_batch
        mine = len(range(self.rank, self.n, self.world_size))
        return -(-mine // self.batch_size)

    def __iter__(self):
        order = self.order()
        for b in range(len(self)):
            yield EpochBatch(
                self.epoch, b, order[b * self.global_batch : (b + 1) * self.global_batch], self.rank, self.world_size
            )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed hash of uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def sample_draws(seed: int, epoch: int, rows: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float64 per row, a pure function of (seed, epoch, row): counter-based randomness."""
    key = _splitmix64(_splitmix64(np.full(len(rows), seed, np.uint64)) ^ np.uint64(epoch))
    bits = _splitmix64(key ^ np.asarray(rows, dtype=np.uint64))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


__all__ = ["EpochBatch", "EpochBatchSampler", "sample_draws"]


def epoch_loader(
    data, batch_size: int, shuffle: bool, seed: int, trainer=None, num_workers: int = 0, persistent: bool = False
):
    """A DataLoader over a batch-level dataset (items: :class:`EpochBatch`) with this process's share of
    seeded epochs: shuffled whole batches for training, every item exactly once otherwise."""
    from torch.utils.data import DataLoader

    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    sampler = EpochBatchSampler(
        len(data), batch_size, shuffle=shuffle, seed=seed, drop_last=shuffle, rank=rank, world_size=world
    )
    return DataLoader(
        data,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=persistent and num_workers > 0,
        pin_memory=False,
    )
