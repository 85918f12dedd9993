"""locsens.data.sampling: seeded epochs, rank shards that recombine into the one-process batches, counter-based draws."""

import numpy as np
import pytest

from locsens.data.sampling import EpochBatchSampler, sample_draws


def positions(sampler):
    return [item.positions for item in sampler]


def test_sampler_reproduces_per_epoch_and_shards_by_rank():
    s = EpochBatchSampler(103, 10, shuffle=True, seed=5, drop_last=False)
    first = [p.copy() for p in positions(s)]
    assert sorted(np.concatenate(first).tolist()) == list(range(103))
    assert all(np.array_equal(a, b) for a, b in zip(first, positions(s)))
    s.set_epoch(1)
    assert not np.array_equal(np.concatenate(first), np.concatenate(positions(s)))
    shards = [
        np.concatenate(positions(EpochBatchSampler(103, 10, True, 5, True, rank=r, world_size=2))) for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 50 and not set(shards[0]) & set(shards[1])
    evaluation = EpochBatchSampler(20, 7, shuffle=False, seed=5, drop_last=False)
    evaluation.set_epoch(4)
    assert [item.epoch for item in evaluation] == [0, 0, 0]  # evaluation draws do not change with the epoch


def test_sample_draws_are_a_function_of_seed_epoch_and_row():
    rows = np.arange(10_000)
    a = sample_draws(0, 0, rows)
    assert np.array_equal(a, sample_draws(0, 0, rows))
    assert np.array_equal(a[[5, 7]], sample_draws(0, 0, np.array([5, 7])))  # independent of the batch
    assert not np.allclose(a, sample_draws(0, 1, rows)) and not np.allclose(a, sample_draws(1, 0, rows))
    assert abs(a.mean() - 0.5) < 0.01 and a.min() >= 0 and a.max() < 1
    assert np.histogram(a, bins=10, range=(0, 1))[0].min() > 900  # roughly uniform


@pytest.mark.parametrize("n,world", [(103, 2), (100, 2), (103, 3), (5, 4), (2048, 3)])
def test_evaluation_shards_cover_every_item_exactly_once(n, world):
    shards = [
        np.concatenate(
            positions(EpochBatchSampler(n, 7, shuffle=False, seed=0, drop_last=False, rank=r, world_size=world))
            or [np.zeros(0, np.int64)]
        )
        for r in range(world)
    ]
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))  # none dropped, none duplicated
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for r, shard in enumerate(shards):
        assert len(EpochBatchSampler(n, 7, False, 0, False, rank=r, world_size=world)) == -(-len(shard) // 7)


@pytest.mark.parametrize("n,batch", [(103, 10), (1000, 64), (64, 64)])
def test_training_shards_are_the_single_process_batches_split(n, batch):
    """With batch B/2 on each of 2 ranks, step b's two rank batches together are exactly the one-process
    batch b of size B: averaged DDP gradients then equal the one-process gradient (mean losses)."""
    single = [set(p.tolist()) for p in positions(EpochBatchSampler(n, batch, True, 3, True))]
    ranks = [positions(EpochBatchSampler(n, batch // 2, True, 3, True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)  # equal step counts on every rank
    for b, want in enumerate(single):
        assert set(ranks[0][b].tolist()) | set(ranks[1][b].tolist()) == want
        assert len(ranks[0][b]) == len(ranks[1][b]) == batch // 2
