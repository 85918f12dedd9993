"""TripletDataModule: negatives never carry the positive's tag, batches are seeded and reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_tiny_embeddings

from locsens.data import store
from locsens.data.triplets import TripletDataModule


@pytest.fixture(scope="module")
def embeddings_path(tiny_stores, tmp_path_factory):
    return write_tiny_embeddings(tiny_stores, tmp_path_factory.mktemp("emb") / "mcc.h5")


def epoch_batches(triplets, epoch: int, rank: int = 0, world_size: int = 1):
    """The training batches of one epoch, as the train loader's sampler yields them."""
    sampler = triplets.sampler(shuffle=True, drop_last=True, rank=rank, world_size=world_size)
    sampler.set_epoch(epoch)
    return [triplets[item] for item in sampler]


def make_dm(tiny_stores, embeddings_path, **kw) -> TripletDataModule:
    args = dict(
        dataset_path=tiny_stores["dataset"], embeddings_path=embeddings_path, batch_size=64, num_negatives=6, seed=3
    )
    args.update(kw)
    dm = TripletDataModule(**args)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    "mode, power, loc_swap",
    [("retrieval", 0.0, 0.0), ("tagging", 0.0, 0.0), ("tagging", 0.75, 0.0), ("tagging", 0.0, 0.3)],
)
def test_negatives_never_carry_the_positive_tag(tiny_stores, embeddings_path, mode, power, loc_swap):
    """Image / tag swaps never carry the tag; location swaps (loc_swap > 0) keep image and tag and move."""
    dm = make_dm(
        tiny_stores, embeddings_path, negative_mode=mode, tag_negative_power=power, location_swap_prob=loc_swap
    )
    ds = dm.dataset
    train_rows = set(dm.train_triplets.rows.tolist())
    n_swapped_tag = n_swapped_img = n_moved = n_neg = n_elsewhere = 0
    for epoch in range(3):
        for batch in epoch_batches(dm.train_triplets, epoch):
            img, tag = batch["image_index"].numpy(), batch["tag_index"].numpy()
            lat, lon = batch["lat"].numpy(), batch["lon"].numpy()
            pos_img, pos_tag = img[:, 0], tag[:, 0]
            # the positive is real: its tag is one of its image's tags, at the image's own location
            assert all(t in ds.tags_of(r) for r, t in zip(pos_img, pos_tag))
            np.testing.assert_array_equal(lat[:, 0], ds.lat[pos_img].astype(np.float32))
            np.testing.assert_array_equal(lon[:, 0], ds.lon[pos_img].astype(np.float32))
            for j in range(1, img.shape[1]):
                moved = (img[:, j] == pos_img) & (tag[:, j] == pos_tag)  # a location-swap negative
                n_elsewhere += int(((lat[moved, j] != lat[moved, 0]) | (lon[moved, j] != lon[moved, 0])).sum())
                np.testing.assert_array_equal(lat[~moved, j], lat[~moved, 0])  # the others keep the positive's place
                n_moved += int(moved.sum())
                n_neg += len(moved)
                carries = np.array([t in ds.tags_of(r) for r, t in zip(img[~moved, j], tag[~moved, j])])
                assert not carries.any(), f"a {mode} negative carries its tag"
                swapped_tag = tag[:, j] != pos_tag
                same_img = img[:, j] == pos_img
                assert np.all(swapped_tag | ~same_img | moved)  # every negative changes something
                if mode == "retrieval":
                    assert not swapped_tag.any()
                n_swapped_tag += int(swapped_tag.sum())
                n_swapped_img += int((~same_img).sum())
                assert set(img[:, j].tolist()) <= train_rows  # negatives come from the split
            np.testing.assert_array_equal(batch["image"].numpy(), dm.image_embeddings[batch["image_index"]].numpy())
            np.testing.assert_array_equal(batch["tag"].numpy(), dm.tag_embeddings[batch["tag_index"]].numpy())
    assert n_swapped_img > 0
    assert abs(n_moved / n_neg - loc_swap) < 0.05
    assert n_elsewhere >= 0.95 * n_moved  # moved to another photo's place (rarely the same place by chance)
    if mode == "tagging":
        total = n_swapped_img + n_swapped_tag
        assert 0.4 < n_swapped_tag / total < 0.6  # tag_swap_prob = 0.5


def test_popularity_weighted_tag_negatives_follow_the_training_counts(tiny_stores, embeddings_path):
    """tag_negative_power=p draws swapped-in tags ~ (train count + 1) ** p (before rejecting the tags the
    image carries): compared with the exact distribution by total variation over many draws."""
    ds = store.DatasetStore(tiny_stores["dataset"])
    train = ds.split_rows("train")
    counts = np.zeros(ds.num_tags)
    for r in train:
        counts[ds.tags_of(r)] += 1
    for power in (0.0, 1.0):
        dm = make_dm(tiny_stores, embeddings_path, negative_mode="tagging", tag_negative_power=power)
        draws = dm.train_triplets._draw_tags(np.random.default_rng(0), 200_000) if power else None
        if power == 0.0:
            assert dm.train_triplets.tag_cdf is None  # the paper's uniform draw
            continue
        want = (counts + 1.0) ** power
        want /= want.sum()
        got = np.bincount(draws, minlength=ds.num_tags) / len(draws)
        assert 0.5 * np.abs(got - want).sum() < 0.02
    with pytest.raises(ValueError, match="tag_negative_power"):
        make_dm(tiny_stores, embeddings_path, tag_negative_power=-1.0)


def test_epoch_visits_every_tagged_training_image_once(tiny_stores, embeddings_path):
    dm = make_dm(tiny_stores, embeddings_path)
    seen = np.concatenate([batch["image_index"][:, 0].numpy() for batch in epoch_batches(dm.train_triplets, 0)])
    n, b = len(dm.train_triplets.rows), dm.train_triplets.batch_size
    assert len(seen) == n - n % b and len(set(seen.tolist())) == len(seen)  # each once; the ragged tail is dropped
    assert set(seen.tolist()) <= set(dm.train_triplets.rows.tolist())
    assert np.all(dm.dataset.split[seen] == store.SPLIT_IDS["train"])


def test_batches_reproducible_and_epochs_differ(tiny_stores, embeddings_path):
    a = make_dm(tiny_stores, embeddings_path, negative_mode="tagging")
    b = make_dm(tiny_stores, embeddings_path, negative_mode="tagging")
    for epoch, index in [(0, 0), (1, 2)]:
        for name, value in epoch_batches(a.train_triplets, epoch)[index].items():
            assert torch.equal(value, epoch_batches(b.train_triplets, epoch)[index][name]), name
    assert not torch.equal(
        epoch_batches(a.train_triplets, 0)[0]["image_index"], epoch_batches(a.train_triplets, 1)[0]["image_index"]
    )
    c = make_dm(tiny_stores, embeddings_path, negative_mode="tagging", seed=4)
    assert not torch.equal(
        epoch_batches(a.train_triplets, 0)[0]["image_index"], epoch_batches(c.train_triplets, 0)[0]["image_index"]
    )


def test_rank_batches_together_are_the_one_process_batch(tiny_stores, embeddings_path):
    """Under DDP each rank keeps its share of the one-process batch b (with the same negatives), so W ranks
    together train on exactly the one-process batches."""
    one = make_dm(tiny_stores, embeddings_path, batch_size=64, negative_mode="tagging", location_swap_prob=0.2)
    two = make_dm(tiny_stores, embeddings_path, batch_size=32, negative_mode="tagging", location_swap_prob=0.2)
    single = epoch_batches(one.train_triplets, 2)
    ranks = [epoch_batches(two.train_triplets, 2, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for b, want in enumerate(single):
        for key in want:
            together = torch.stack([ranks[0][b][key], ranks[1][b][key]], 1).flatten(0, 1)  # interleaved back
            assert torch.equal(together, want[key]), key


def test_loader_sets_epoch_and_val_is_fixed(tiny_stores, embeddings_path):
    dm = make_dm(tiny_stores, embeddings_path)
    loader = dm.train_dataloader()
    first = next(iter(loader))["image_index"]
    loader.sampler.set_epoch(1)
    assert not torch.equal(first, next(iter(loader))["image_index"])
    val, tagging = dm.val_dataloader()
    val.sampler.set_epoch(5)  # Lightning may call it; val triplets stay the same draw
    assert torch.equal(
        next(iter(val))["image_index"],
        dm.val_triplets[next(iter(dm.val_triplets.sampler(False, False)))]["image_index"],
    )
    batch = next(iter(tagging))
    n = dm.hparams.val_batch_size
    assert batch["image"].shape == (n, 300) and batch["target"].shape[0] == n
    rows = dm.val_tagging.rows[:n]
    for i, r in enumerate(rows):
        gt = batch["target"][i]
        assert sorted(gt[gt >= 0].tolist()) == sorted(dm.dataset.tags_of(r).tolist())
        q = int(batch["query_tag"][i])
        assert q == -1 or q in dm.dataset.tags_of(r)
    assert dm.model_kwargs() == {"embed_dim": 300}


def test_mismatched_embeddings_fail_clearly(tiny_stores, tmp_path):
    ds = store.DatasetStore(tiny_stores["dataset"])
    path = store.write_embedding_store(
        tmp_path / "bad.h5",
        photo_id=ds.photo_id[::-1],
        image=np.zeros((len(ds), 8)),
        tag=np.zeros((ds.num_tags, 8)),
        vocab=ds.vocab,
        model="x",
        checkpoint_sha256="x",
        similarity="cosine",
    )
    with pytest.raises(store.StoreError, match="photo ids do not match"):
        make_dm(tiny_stores, path)
    with pytest.raises(ValueError, match="negative_mode"):
        TripletDataModule(tiny_stores["dataset"], path, negative_mode="hard")
