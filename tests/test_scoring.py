"""The scoring engine computes exactly the model's forward (fp32), keeps rankings in bf16, falls back
to fp32 by itself, and follows weight changes -- on the project's LocSens, built from the real config.

Tolerance of the fp32 checks: |engine - forward| <= 1e-5 * max(1, max |score|) -- the engine sums the
first layer's three column blocks in a different order than the module's single matmul, so the two
agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import build_locsens
from torch import nn

import locsens.scoring as scoring
from locsens.scoring import PreparedImages, ScoringEngine

E, BRANCH = 24, 16
FUSIONS = ("concat300", "raw2d", "zeroed", "dropout")


def model_for(fusion: str = "concat300", hidden=(64, 32), groups: int = 8, seed: int = 0, *overrides):
    """The project's LocSens from the real config, small, with PyTorch's init and a non-trivial GroupNorm
    affine (as after training), so every block of the scorer's input matters."""
    model = build_locsens(
        f"model/fusion={fusion}",
        "model.init=torch",
        *overrides,
        embed_dim=E,
        width=BRANCH,
        hidden=hidden,
        groups=groups,
        seed=seed,
    )
    with torch.no_grad():
        for m in model.scorer.layers:
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def inputs(b: int, n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, E, generator=g),
        torch.randn(n, E, generator=g),
        torch.rand(b, generator=g) * 180 - 90,
        torch.rand(b, generator=g) * 360 - 180,
    )


def naive_tag_scores(model, images, vocab, lat, lon):
    """The original's method: repeat each query once per tag and run the whole forward."""
    with torch.no_grad():
        return torch.stack(
            [
                model(images[i].expand(len(vocab), -1), vocab, lat[i].expand(len(vocab)), lon[i].expand(len(vocab)))
                for i in range(len(images))
            ]
        )


def naive_image_scores(model, tags, cands, lat, lon):
    with torch.no_grad():
        return torch.stack(
            [
                model(cands, tags[i].expand(len(cands), -1), lat[i].expand(len(cands)), lon[i].expand(len(cands)))
                for i in range(len(tags))
            ]
        )


def assert_close_scores(got, want):
    tol = 1e-5 * max(1.0, want.abs().max().item())
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= tol


def assert_topk_matches(vals, ids, full, k):
    """Top-k of the engine = the k best of the full score matrix (values exact, ids up to ties)."""
    ref = torch.topk(full, min(k, full.shape[1]), dim=1)
    assert_close_scores(vals, ref.values)
    assert_close_scores(full.gather(1, ids), ref.values)  # every returned id really has its rank's score
    assert all(len(set(row.tolist())) == len(row) for row in ids)


@pytest.mark.parametrize("fusion", ["concat300", "raw2d", "zeroed", "dropout"])
def test_score_tags_equals_forward(fusion):
    model = model_for(fusion)
    images, vocab, lat, lon = inputs(7, 53)
    want = naive_tag_scores(model, images, vocab, lat, lon)
    engine = ScoringEngine(model, dtype="fp32", chunk_pairs=17, tag_embeddings=vocab)  # 7 x 53 pairs, chunks of 17
    assert engine.dtype_used == "fp32"
    assert_close_scores(engine.score_tags(images, lat, lon), want)
    vals, ids = engine.score_tags(images, lat, lon, k=10)
    assert vals.shape == ids.shape == (7, 10)
    assert_topk_matches(vals, ids, want, 10)
    vals, ids = engine.score_tags(images, lat, lon, k=100)  # k > V: all V, sorted
    assert ids.shape == (7, 53)
    assert_topk_matches(vals, ids, want, 53)


@pytest.mark.parametrize("fusion", ["concat300", "raw2d", "zeroed"])
def test_score_images_equals_forward(fusion):
    model = model_for(fusion)
    tags, cands, lat, lon = inputs(6, 41, seed=2)
    want = naive_image_scores(model, tags, cands, lat, lon)
    engine = ScoringEngine(model, dtype="fp32", chunk_pairs=13)
    assert_close_scores(engine.score_images(tags, lat, lon, cands), want)
    prepared = engine.prepare_images(cands)
    assert isinstance(prepared, PreparedImages) and len(prepared) == 41
    vals, ids = engine.score_images(tags, lat, lon, prepared, k=11)
    assert_topk_matches(vals, ids, want, 11)
    # queries given as vocabulary ids, and the batched evaluation helper
    engine.set_vocabulary(tags)
    assert_close_scores(engine.score_images(torch.arange(6).flip(0), lat.flip(0), lon.flip(0), prepared), want.flip(0))
    r_vals, r_ids = engine.score_images(
        tags[:4], lat[:4], lon[:4], prepared, k=11
    )  # other batch shapes: equal to rounding
    assert_close_scores(r_vals, vals[:4])
    assert_close_scores(want[:4].gather(1, r_ids), vals[:4])


def test_cache_follows_weight_changes_and_stale_sets_are_refused():
    model = model_for()
    images, vocab, lat, lon = inputs(3, 20, seed=4)
    engine = ScoringEngine(model, dtype="fp32", tag_embeddings=vocab)
    before = engine.score_tags(images, lat, lon)
    prepared = engine.prepare_images(vocab)
    with torch.no_grad():  # an optimizer-like in-place update of the tag branch and a scorer layer
        model.tag_branch.linear.weight.add_(0.3)
        model.scorer.layers[3].weight.mul_(-1.0)
    after = engine.score_tags(images, lat, lon)
    assert not torch.allclose(before, after)
    assert_close_scores(after, naive_tag_scores(model, images, vocab, lat, lon))
    with pytest.raises(ValueError, match="stale"):
        engine.score_images(vocab[:3], lat, lon, prepared)
    model.load_state_dict(model_for(seed=5).state_dict())
    assert_close_scores(engine.score_tags(images, lat, lon), naive_tag_scores(model, images, vocab, lat, lon))


def test_training_mode_is_restored_and_inputs_checked():
    model = model_for().train()
    images, vocab, lat, lon = inputs(2, 5)
    engine = ScoringEngine(model, dtype="fp32", tag_embeddings=vocab)
    engine.score_tags(images, lat, lon)
    assert model.training
    with pytest.raises(ValueError, match="B = len"):
        engine.score_tags(images, lat[:1], lon[:1])
    with pytest.raises(ValueError, match="vocabulary"):
        ScoringEngine(model, dtype="fp32").score_tags(images, lat, lon)
    with pytest.raises(ValueError, match="dtype"):
        ScoringEngine(model, dtype="fp16")
    model.scorer = nn.Sequential(nn.Linear(2 * BRANCH + BRANCH, 8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(TypeError, match="fast"):
        ScoringEngine(model)


@pytest.fixture(scope="module")
def trained_like_model():
    """A small model trained a few hundred steps to rank a planted tag-image-location relation, so its
    score distribution (and its top-10 margins) look like a trained model's rather than random init's."""
    model = model_for("concat300", (128, 64), 8, 7).train()
    g = torch.Generator().manual_seed(8)
    proj = torch.randn(E, E, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: thread hand-offs cost more than they save on a busy machine
    try:
        for _ in range(40):
            img = torch.randn(64, E, generator=g)
            lat, lon = torch.rand(64, generator=g) * 180 - 90, torch.rand(64, generator=g) * 360 - 180
            pos = img @ proj + lat[:, None] / 30
            neg = torch.randn(64, E, generator=g)
            loss = F.relu(0.1 - model(img, pos, lat, lon) + model(img, neg, lat, lon)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.parametrize("dtype, raw_agreement, raw_error", [("bf16", 0.7, 0.05), ("int8", 0.3, 0.2)])
def test_reduced_precision_keeps_top10_sets(trained_like_model, dtype, raw_agreement, raw_error):
    """bf16 / int8 with the fp32-rescored shortlist keep fp32's top-10 set on >= 95% of queries; the raw
    reduced-precision top-10 (rescore_extra=0) is only a perturbation of fp32's (near-ties at rank 10
    flip) and its largest score error a few percent of the scores' std."""
    model = trained_like_model
    images, vocab, lat, lon = inputs(40, 3000, seed=9)
    fp32 = ScoringEngine(model, dtype="fp32", tag_embeddings=vocab)
    full32 = fp32.score_tags(images, lat, lon)
    ids32 = torch.topk(full32, 10, dim=1).indices
    for extra, min_agreement in ((32, 0.95), (0, raw_agreement)):
        engine = ScoringEngine(model, dtype=dtype, tag_embeddings=vocab, rescore_extra=extra)
        assert engine.dtype_used == dtype
        vals, ids = engine.score_tags(images, lat, lon, k=10)
        same = [set(a.tolist()) == set(b.tolist()) for a, b in zip(ids32, ids)]
        assert sum(same) / len(same) >= min_agreement, (extra, sum(same))
        assert_close_scores(vals, full32.gather(1, ids))  # the shortlist's returned scores are fp32's
    full = engine.score_tags(images, lat, lon)  # no k: every score from the reduced-precision path
    assert 0 < (full - full32).abs().max() <= raw_error * full32.std()


def test_auto_falls_back_to_fp32_and_says_so(monkeypatch, caplog):
    model = model_for()
    monkeypatch.setattr(scoring, "_BF16_VERDICT", {"cpu": (False, "bf16 matmul 0.15x the speed of fp32 on cpu")})
    monkeypatch.setattr(scoring, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="locsens.scoring"):
        engine = ScoringEngine(model, dtype="auto")
        ScoringEngine(model, dtype="auto")
    assert engine.dtype_used == "fp32" and engine.fast.dtype == "fp32"
    assert "0.15x" in engine.dtype_reason
    assert sum("falls back to fp32" in r.message for r in caplog.records) == 1  # said once
    monkeypatch.setattr(scoring, "_BF16_VERDICT", {"cpu": (True, "bf16 matmul 4.00x the speed of fp32 on cpu")})
    assert ScoringEngine(model, dtype="auto").dtype_used == "bf16"


def test_bf16_verdict_measures_this_machine(monkeypatch):
    monkeypatch.setattr(scoring, "_BF16_VERDICT", {})
    use, why = scoring.bf16_verdict(torch.device("cpu"))
    assert isinstance(use, bool) and "x the speed of fp32" in why
    assert scoring._BF16_VERDICT["cpu"] == (use, why)


def test_every_composition_of_parts():
    """The engine on every fusion, several location encoders, products and skip, against the forward."""
    images, vocab, lat, lon = inputs(4, 23, seed=10)
    for fusion, encoder, products, skip in [
        ("concat300", "latlon", False, False),
        ("raw2d", "latlon", False, False),
        ("raw2d", "sphere_multiscale", False, False),
        ("zeroed", "wrap", False, False),
        ("dropout", "wrap", False, False),
        ("concat300", "latlon", True, False),
        ("concat300", "multiresolution_grid", True, True),
        ("raw2d", "wrap", True, False),
        ("zeroed", "latlon", True, True),
        ("concat300", "latlon", False, True),
    ]:
        extra = {
            "sphere_multiscale": ["model.location_encoder.num_scales=4"],
            "multiresolution_grid": ["model.location_encoder.num_levels=4"],
        }
        model = model_for(
            fusion,
            (32, 16),
            8,
            0,
            f"model/location_encoder={encoder}",
            *extra.get(encoder, []),
            f"model.scorer.pairwise_products={products}",
            f"model.scorer.similarity_skip={skip}",
        )
        if skip:
            with torch.no_grad():
                model.scorer.skip.fill_(0.7)
        if encoder == "multiresolution_grid":
            with torch.no_grad():
                model.location_encoder.tables.normal_()
        loc_dim = model.encode_location(lat, lon).shape[1]
        assert loc_dim == (model.location_encoder.out_dim if fusion == "raw2d" else BRANCH)
        engine = ScoringEngine(model, dtype="fp32", chunk_pairs=19, tag_embeddings=vocab)
        want = naive_tag_scores(model, images, vocab, lat, lon)
        assert_close_scores(engine.score_tags(images, lat, lon), want)
        assert_close_scores(
            engine.score_images(vocab[:4], lat, lon, images), naive_image_scores(model, vocab[:4], images, lat, lon)
        )
        if products or skip:  # the int8 shortlist is rescored in fp32 with the interaction and skip terms too
            vals, ids = ScoringEngine(model, dtype="int8", tag_embeddings=vocab).score_tags(images, lat, lon, k=5)
            assert_close_scores(vals, want.gather(1, ids))
            vals, ids = ScoringEngine(model, dtype="int8").score_images(vocab[:4], lat, lon, images, k=3)
            assert_close_scores(vals, naive_image_scores(model, vocab[:4], images, lat, lon).gather(1, ids))


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
@pytest.mark.parametrize("products", [False, True])
def test_candidate_lists_and_exclusion_equal_the_grid(dtype, products):
    """Per-query candidate lists (the cascade) score exactly the grid's pairs; -1 pads score -inf; an
    exclusion mask removes tags from the exhaustive top-k."""
    model = model_for(
        "concat300",
        (32, 16),
        8,
        3,
        f"model.scorer.pairwise_products={products}",
        f"model.scorer.similarity_skip={products}",
    )
    images, vocab, lat, lon = inputs(6, 40, seed=11)
    engine = ScoringEngine(model, dtype=dtype, chunk_pairs=23, tag_embeddings=vocab)
    full = ScoringEngine(model, dtype="fp32", tag_embeddings=vocab).score_tags(images, lat, lon)
    g = torch.Generator().manual_seed(12)
    lists = torch.stack([torch.randperm(40, generator=g)[:15] for _ in range(6)])
    lists[:, -3:] = -1  # ragged lists
    if dtype == "fp32":
        got = engine.score_tags(images, lat, lon, candidates=lists)
        assert_close_scores(got[:, :12], full.gather(1, lists[:, :12]))
        assert torch.isinf(got[:, 12:]).all()
    vals, ids = engine.score_tags(images, lat, lon, k=5, candidates=lists)
    want = torch.topk(full.gather(1, lists[:, :12]), 5, dim=1)
    assert_close_scores(vals, want.values)  # reduced precision: the fp32 rescore gives fp32's values
    assert torch.equal(torch.sort(ids, 1).values, torch.sort(lists[:, :12].gather(1, want.indices), 1).values)
    exclude = torch.zeros(40, dtype=torch.bool)
    exclude[full.argmax(1)] = True  # every image's best tag is excluded
    vals, ids = engine.score_tags(images, lat, lon, k=4, exclude=exclude)
    masked = full.masked_fill(exclude[None], -float("inf"))
    assert_close_scores(vals, torch.topk(masked, 4, dim=1).values) and not exclude[ids].any()
    prepared = engine.prepare_images(images)
    img_lists = torch.stack([torch.randperm(6, generator=g)[:4] for _ in range(3)])
    vals, ids = engine.score_images(vocab[:3], lat[:3], lon[:3], prepared, k=2, shortlist=img_lists)
    all_img = ScoringEngine(model, dtype="fp32").score_images(vocab[:3], lat[:3], lon[:3], images)
    assert_close_scores(vals, torch.topk(all_img.gather(1, img_lists), 2, dim=1).values)
