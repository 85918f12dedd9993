"""Frequency baselines: hand-made store with exact expected lists, naive reference, tiny-store smoke test."""

from __future__ import annotations

import numpy as np
import pytest
import reference_metrics as ref
import torch

from locsens.data.store import DatasetStore, write_dataset_store
from locsens.eval.baselines import DEFAULT_FALLBACK, FrequencyTagger
from locsens.metrics.tagging import ground_truth_from_csr, tagging_accuracy

TRAIN, VAL, TEST = 0, 1, 2


def write_store(
    path, photos: list[tuple[int, int, int, int, int, list[int]]], num_tags: int, n_places: dict
) -> DatasetStore:
    """photos: (split, town, region, country, continent, tags). Place names are generated."""
    n = len(photos)
    tags = [p[5] for p in photos]
    indptr = np.concatenate([[0], np.cumsum([len(t) for t in tags])])
    indices = np.array([t for ts in tags for t in ts], dtype=np.int64)
    levels = ("town", "region", "country", "continent")
    write_dataset_store(
        path,
        photo_id=np.arange(n) + 1000,
        user_index=np.zeros(n),
        users=["u@N00"],
        lat=np.zeros(n),
        lon=np.zeros(n),
        tags_indptr=indptr,
        tags_indices=indices,
        places={lvl: [f"{lvl}{i}" for i in range(n_places[lvl])] for lvl in levels},
        place_index={lvl: np.array([p[1 + j] for p in photos]) for j, lvl in enumerate(levels)},
        place_names=[],
        split=np.array([p[0] for p in photos]),
        vocab=[f"tag{i}" for i in range(num_tags)],
        vocab_count=np.bincount(indices, minlength=num_tags),
    )
    return DatasetStore(path)


@pytest.fixture
def hand_store(tmp_path) -> DatasetStore:
    # towns 0,1 in country 0; town 2 in country 1 (continent 0); town 4 in country 3 (continent 1).
    # Test-only places: town 3 / country 2 (continent 1), town 5 in country 0, an unknown town (-1).
    photos = [
        (TRAIN, 0, 0, 0, 0, [0, 1]),
        (TRAIN, 0, 0, 0, 0, [0, 1, 1]),
        (TRAIN, 0, 0, 0, 0, [0, 2]),
        (TRAIN, 1, 0, 0, 0, [3]),
        (TRAIN, 1, 0, 0, 0, [3, 4]),
        (TRAIN, 2, 1, 1, 0, [5]),
        (TRAIN, 4, 2, 3, 1, [6, 7]),
        (TRAIN, 4, 2, 3, 1, [6]),
        (VAL, 0, 0, 0, 0, [7]),
        (VAL, 0, 0, 0, 0, [7]),
        (VAL, 0, 0, 0, 0, [7]),  # must not count
        (TEST, 0, 0, 0, 0, [2]),  # row 11: seen town
        (TEST, 3, 2, 2, 1, [6]),  # row 12: unseen town and country -> continent 1 -> global
        (TEST, 5, 0, 0, 0, [3]),  # row 13: unseen town of a seen country
        (TEST, -1, -1, 0, 0, [4]),  # row 14: unknown town id
    ]
    return write_store(tmp_path / "hand.h5", photos, 8, {"town": 6, "region": 3, "country": 4, "continent": 2})


def test_hand_made_town_frequency_lists(hand_store):
    tagger = FrequencyTagger(hand_store, "town").fit()
    # row 11: town 0 ranks 0 (3 images), 1 (2; the duplicate counts once), 2 (1); country 0 adds 3, then 4
    assert tagger.topk([11], 5).tolist() == [[0, 1, 2, 3, 4]]
    # row 12: town 3 and country 2 never seen -> continent 1 (6, 7) -> global (0, 1, 3, 6, ...)
    assert tagger.topk([12], 4).tolist() == [[6, 7, 0, 1]]
    # row 13: a never-seen town falls back to its country: 0 (3), then 1 and 3 tie at 2 -> lower id first
    assert tagger.topk([13], 3).tolist() == [[0, 1, 3]]
    assert tagger.topk([14], 3).tolist() == [[0, 1, 3]]
    # order of rows is kept, duplicates allowed, k > V is capped at V and the list is complete
    both = tagger.topk([13, 11, 13], 20)
    assert both.shape == (3, 8)
    assert both[0].tolist() == [0, 1, 3, 2, 4, 5, 6, 7] and torch.equal(both[0], both[2])
    assert all(sorted(r) == list(range(8)) for r in both.tolist())


def test_hand_made_country_and_global_lists(hand_store):
    country = FrequencyTagger(hand_store, "country").fit()
    assert country.topk([11], 5).tolist() == [[0, 1, 3, 2, 4]]
    assert country.topk([12], 3).tolist() == [[6, 7, 0]]
    # global: 0 (3 images), 1, 3, 6 (2 each, by id), 2, 4, 5, 7 -- the 3 val images of tag 7 do not count
    assert FrequencyTagger(hand_store, "global").fit().topk([11, 12], 8).tolist() == [[0, 1, 3, 6, 2, 4, 5, 7]] * 2
    assert FrequencyTagger(hand_store, "town").fit().topk([11], 2).tolist() == [[0, 1]]


def test_fallback_chain_is_configurable_and_checked(hand_store):
    no_country = FrequencyTagger(hand_store, "town", fallback=("town",)).fit()
    assert no_country.topk([11], 5).tolist() == [[0, 1, 2, 3, 6]]  # town 0, then straight to global
    assert DEFAULT_FALLBACK["town"] == ("town", "country", "continent")
    with pytest.raises(ValueError, match="unknown level"):
        FrequencyTagger(hand_store, "street")
    with pytest.raises(RuntimeError, match="fit"):
        FrequencyTagger(hand_store, "town").topk([11])
    with pytest.raises(IndexError):
        FrequencyTagger(hand_store, "town").fit().topk([99])


def test_prior_is_a_smoothed_place_distribution(hand_store):
    sharp = FrequencyTagger(hand_store, "town", alpha=1e-9).fit().prior([11, 13, 12])
    # town 0: tag counts 0:3, 1:2, 2:1 out of 6
    np.testing.assert_allclose(sharp[0, :3].numpy(), [0.5, 1 / 3, 1 / 6], rtol=1e-5)
    # unseen town 5 inherits country 0: counts 0:3, 1:2, 2:1, 3:2, 4:1 out of 9
    np.testing.assert_allclose(sharp[1, :5].numpy(), np.array([3, 2, 1, 2, 1]) / 9, rtol=1e-5)
    np.testing.assert_allclose(sharp[2, 6:].numpy(), [2 / 3, 1 / 3], rtol=1e-5)  # continent 1
    flat = FrequencyTagger(hand_store, "town", alpha=1e9).fit().prior([11])
    counts = np.array([3, 2, 1, 2, 1, 1, 2, 1])  # global images per tag
    np.testing.assert_allclose(flat[0].numpy(), (counts + 1) / (counts.sum() + 8), rtol=1e-5)
    p = FrequencyTagger(hand_store, "town").fit().prior([11, 12, 13, 14])
    assert (p > 0).all()
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, rtol=1e-5)
    country = FrequencyTagger(hand_store, "country").fit().prior([13])
    np.testing.assert_allclose(p[2].numpy(), country[0].numpy(), rtol=1e-6)  # unseen town = its country


def test_product_of_experts_is_log_softmax_plus_the_log_prior(tiny_stores, tmp_path):
    """MCC x town prior = log softmax(cos / T) + w log p(tag | town), against a numpy reference; T from val only."""
    from conftest import write_tiny_embeddings

    from locsens.eval.methods import EmbeddingMethod, ProductOfExperts

    ds = DatasetStore(tiny_stores["dataset"])
    visual = EmbeddingMethod("mcc", ds, write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=16))
    poe = ProductOfExperts("poe", ds, visual, "town", weight=0.7)
    rows = ds.split_rows("test")[:20]
    cos = visual.image[rows].numpy() @ visual.tag.numpy().T
    logits = cos / poe.temperature
    log_softmax = (
        logits
        - logits.max(1, keepdims=True)
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    want = log_softmax + 0.7 * np.log(FrequencyTagger(ds, "town").fit().prior(rows).numpy())
    np.testing.assert_allclose(poe.tag_scores(rows).numpy(), want, rtol=1e-4, atol=1e-4)
    assert poe.temperature in (0.01, 0.02, 0.05, 0.1, 0.2)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("level", ["town", "country", "global"])
def test_random_store_matches_reference(tmp_path, seed, level):
    rng = np.random.default_rng(seed)
    town_country = np.array([0, 0, 1, 1, 2, 3, 3])
    country_continent = np.array([0, 0, 1, 1])
    photos = []
    for _ in range(120):
        town = int(rng.integers(0, 7))
        split = int(rng.choice(3, p=[0.6, 0.1, 0.3]))
        if split == TRAIN and town == 6:  # town 6 never seen in training
            split = TEST
        c = int(town_country[town])
        photos.append((split, town, c, c, int(country_continent[c]), list(rng.integers(0, 15, rng.integers(0, 5)))))
    ds = write_store(tmp_path / "rand.h5", photos, 15, {"town": 7, "region": 4, "country": 4, "continent": 2})
    test = ds.split_rows("test")
    tagger = FrequencyTagger(ds, level).fit()
    got = tagger.topk(test, 9)
    train = list(ds.split_rows("train"))
    for i, row in enumerate(test):
        want = ref.frequency_topk(train, ds.tags_of, ds.place_index, DEFAULT_FALLBACK[level], row, 9, 15)
        assert got[i].tolist() == want, (level, row)
    # places omitted: the ranking of the other tags, in the same order (the full ranking with them struck out)
    exclude = torch.from_numpy(rng.random(15) < 0.4)
    omitted = tagger.topk(test, 9, exclude=exclude)
    for i, row in enumerate(test):
        full = ref.frequency_topk(train, ds.tags_of, ds.place_index, DEFAULT_FALLBACK[level], row, 15, 15)
        want = [t for t in full if not exclude[t]][:9]
        assert omitted[i].tolist() == want + [-1] * (min(9, 15) - len(want)), (level, row)


def test_tiny_store_end_to_end(tiny_stores):
    ds = DatasetStore(tiny_stores["dataset"])
    test = ds.split_rows("test")
    target = ground_truth_from_csr(ds.tags_indptr, ds.tags_indices, test)
    train = list(ds.split_rows("train"))
    k = min(50, ds.num_tags)
    for level in ("global", "country", "town"):
        tagger = FrequencyTagger(ds, level).fit()
        ranked = tagger.topk(test, 50)
        assert ranked.shape == (len(test), k)
        assert all(len(set(r)) == k for r in ranked.tolist())
        for i in range(0, len(test), max(1, len(test) // 10)):  # the naive reference on a sample
            assert ranked[i].tolist() == ref.frequency_topk(
                train, ds.tags_of, ds.place_index, DEFAULT_FALLBACK[level], test[i], k, ds.num_tags
            )
        out = tagging_accuracy(ranked, target, num_tags=ds.num_tags, ks=(1, 10, k))
        assert 0.0 <= out["A@1"] <= out["A@10"] <= out[f"A@{k}"] <= 100.0
        prior = tagger.prior(test[:64])
        np.testing.assert_allclose(prior.sum(1).numpy(), 1.0, rtol=1e-4)
