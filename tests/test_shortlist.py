"""Shortlist and rerank: the shortlists are what they claim (against brute-force references), and
LocSens reranking a shortlist that holds every candidate reproduces exhaustive scoring exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose, evaluate_overrides

from locsens.config import ConfigError, validate_evaluate_config
from locsens.data.store import DatasetStore, EmbeddingStore
from locsens.eval.baselines import FrequencyTagger
from locsens.eval.methods import LocSensMethod
from locsens.eval.shortlist import ImageShortlist, TagShortlist, union
from locsens.geo import geodesic_km
from locsens.metrics.tagging import place_name_mask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_union_is_the_set_union_without_padding():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(-1, 12, size=(50, 6)))
    b = torch.from_numpy(rng.integers(-1, 12, size=(50, 4)))
    got = union(a, b)
    assert got.shape == (50, 10)
    for row, x, y in zip(got.tolist(), a.tolist(), b.tolist()):
        want = sorted({i for i in x + y if i >= 0})
        assert row == want + [-1] * (10 - len(want))


@pytest.fixture(scope="module")
def stores(tiny_locsens):
    return tiny_locsens


def test_tag_shortlist_is_agnostic_topk_united_with_the_place_prior(stores):
    ds = DatasetStore(stores["dataset"])
    emb = EmbeddingStore(stores["embeddings"])
    rows = ds.split_rows("test")[:40]
    short = TagShortlist(ds, torch.from_numpy(emb.image), torch.from_numpy(emb.tag), "cosine", agnostic=5, prior=4)
    image, tag = F.normalize(torch.from_numpy(emb.image), dim=-1), F.normalize(torch.from_numpy(emb.tag), dim=-1)
    prior = FrequencyTagger(ds, "town", fallback=("town", "region", "country", "continent")).fit()
    exclude = place_name_mask(ds.vocab, ds.place_names)
    for mask in (None, exclude):
        got = short(rows, mask)
        for i, row in enumerate(rows):
            scores = (image[row] @ tag.T).numpy()
            ranked_prior = prior.topk([row], ds.num_tags)[0].tolist()
            if mask is not None:
                scores[mask.numpy()] = -np.inf
                ranked_prior = [t for t in ranked_prior if not mask[t]]
            want = set(np.argsort(-scores)[:5].tolist()) | set(ranked_prior[:4])
            listed = [t for t in got[i].tolist() if t >= 0]
            assert len(listed) == len(set(listed)) and set(listed) == want
            if mask is not None:
                assert not mask[listed].any()


def test_image_shortlist_is_agnostic_topk_united_with_the_nearest(stores):
    ds = DatasetStore(stores["dataset"])
    emb = EmbeddingStore(stores["embeddings"])
    cand = ds.split_rows("test")
    rng = np.random.default_rng(1)
    tags = torch.from_numpy(rng.integers(0, ds.num_tags, 30))
    lat, lon = rng.uniform(30, 50, 30), rng.uniform(-10, 140, 30)
    short = ImageShortlist(emb.image[cand], emb.tag, ds.lat[cand], ds.lon[cand], "cosine", agnostic=7, nearest=9)
    got = short(tags, lat, lon)
    image, tag = F.normalize(torch.from_numpy(emb.image[cand]), dim=-1), F.normalize(torch.from_numpy(emb.tag), dim=-1)
    for i in range(30):
        agnostic = np.argsort(-(tag[tags[i]] @ image.T).numpy())[:7]
        km = geodesic_km(lat[i], lon[i], ds.lat[cand], ds.lon[cand])
        nearest = np.argsort(km, kind="stable")[:9]
        listed = [c for c in got[i].tolist() if c >= 0]
        assert set(listed) == set(agnostic.tolist()) | set(nearest.tolist()) or np.isclose(
            np.sort(km)[8], np.sort(km)[9]
        )  # a tie at the 9th nearest may pick either


def test_reranking_a_full_shortlist_is_exhaustive_scoring(stores):
    ds = DatasetStore(stores["dataset"])
    ckpt = stores["checkpoint"]
    exhaustive = LocSensMethod("x", ds, ckpt, stores["embeddings"], dtype="fp32")
    full = {"agnostic": ds.num_tags, "prior": 0}
    cascade = LocSensMethod("x", ds, ckpt, stores["embeddings"], dtype="fp32", tag_shortlist=full)
    rows = ds.split_rows("test")[:50]
    exclude = place_name_mask(ds.vocab, ds.place_names)
    for mask in (None, exclude):
        a, b = exhaustive.rank_tags(rows, 10, mask), cascade.rank_tags(rows, 10, mask)
        assert torch.equal(a, b)
        scores = exhaustive.tag_scores(rows)
        if mask is not None:
            scores[:, mask] = -torch.inf
        assert torch.equal(a, torch.topk(scores, 10, dim=1).indices)  # the engine's top-k is the scores' top-k
    # both rankings of one scored shortlist (the pipeline's path) are the two separate rankings, in fp32
    # and in the engine's reduced precision (whose top-k is rescored in fp32)
    for dtype in ("fp32", "auto"):
        one = LocSensMethod("x", ds, ckpt, stores["embeddings"], dtype=dtype, tag_shortlist=full)
        both = one.rank_tags_both(rows, 10, exclude)
        assert torch.equal(both[0], exhaustive.rank_tags(rows, 10)), dtype
        assert torch.equal(both[1], exhaustive.rank_tags(rows, 10, exclude)), dtype
    cand = ds.split_rows("test")
    near = LocSensMethod(
        "x", ds, ckpt, stores["embeddings"], dtype="fp32", image_shortlist={"agnostic": 0, "nearest": len(cand)}
    )
    tags = torch.from_numpy(np.random.default_rng(2).integers(0, ds.num_tags, 20))
    lat, lon = torch.from_numpy(ds.lat[cand[:20]]), torch.from_numpy(ds.lon[cand[:20]])
    assert torch.equal(exhaustive.retrieve(tags, lat, lon, cand, 10), near.retrieve(tags, lat, lon, cand, 10))
    assert near.pairs_scored["retrieval"] == exhaustive.pairs_scored["retrieval"] == 20 * len(cand)


def test_evaluation_records_the_mode_and_the_pairs_it_scored(stores, tmp_path):
    from locsens.eval.pipeline import evaluate

    run = stores["run"]
    sizes = [
        "tagging.ks=[1,10]",
        "tagging.shortlist.agnostic=12",
        "tagging.shortlist.prior=5",
        "retrieval.shortlist.agnostic=20",
        "retrieval.shortlist.nearest=20",
    ]
    results = {}
    for mode, extra in (("exhaustive", []), ("cascade", sizes)):
        cfg = compose(
            "evaluate", evaluate_overrides(stores, tmp_path / mode, f"runs=[{run}]", f"shortlist={mode}", *extra)
        )
        results[mode] = evaluate(cfg)["locsens_scoring"]
        assert json.loads((tmp_path / mode / "results.json").read_text())["locsens_scoring"] == results[mode]
    name = next(iter(results["cascade"]["pairs_scored"]))
    ex, ca = results["exhaustive"], results["cascade"]
    assert ex["tagging"] == ex["retrieval"] == "exhaustive"
    assert ca["tagging"] == {"cascade": {"agnostic": 12, "prior": 5}}
    assert ca["retrieval"] == {"cascade": {"agnostic": 20, "nearest": 20}}
    for task in ("tagging", "retrieval"):
        assert 0 < ca["pairs_scored"][name][task] < ex["pairs_scored"][name][task]
    assert "cascade (shortlist: agnostic 12, prior 5;" in (tmp_path / "cascade" / "tables.md").read_text()
    assert "exhaustive (every candidate scored)" in (tmp_path / "exhaustive" / "tables.md").read_text()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tagging.shortlist={agnostic:20,prior:10}"], "expected agnostic or prior >= 50"),
        (["tagging.shortlist={agnostic:20,prior:10}", "tagging.ks=[1,5]"], None),  # A@5 at most: 20 tags fill it
        (["retrieval.shortlist={agnostic:5,nearest:3}"], "expected agnostic or nearest >= 10"),
        (["tagging.shortlist.agnostic=-1"], "tagging.shortlist.agnostic=-1: expected an integer >= 0"),
        (["+tagging.shortlist.agnostc=100"], "did you mean 'agnostic'"),
    ],
)
def test_bad_shortlists_are_named(stores, tmp_path, overrides, message):
    cfg = compose("evaluate", evaluate_overrides(stores, tmp_path, "shortlist=cascade", *overrides))
    if message is None:
        validate_evaluate_config(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        validate_evaluate_config(cfg)
