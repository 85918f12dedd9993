"""Location priors: the presence-only loss by hand, the neighbour priors against brute force, a learned
prior trained through train(), and LocSens' prior skip (exact engine, checkpoint round trip)."""

import math

import numpy as np
import pytest
import reference_metrics as ref
import torch
from conftest import build_locsens, compose

from locsens.data.store import DatasetStore
from locsens.models.geo_prior import presence_only_loss, random_locations
from locsens.priors import NeighbourPrior
from locsens.scoring import ScoringEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_presence_only_loss_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    present = torch.tensor([[True, False, False], [False, False, True]])
    random_logits = torch.tensor([[-3.0, 0.0, 1.0], [2.0, -1.0, 0.0]])
    lam = 4.0

    def log_sig(x):
        return math.log(1 / (1 + math.exp(-x)))

    total = 0.0
    for i in range(2):
        for t in range(3):
            x = float(logits[i, t])
            total += -lam * log_sig(x) if present[i, t] else -log_sig(-x)
            total += -log_sig(-float(random_logits[i, t]))
    assert float(presence_only_loss(logits, present, random_logits, lam)) == pytest.approx(total / 6, rel=1e-6)


def test_random_locations_are_uniform_on_the_sphere():
    lat, lon = random_locations(200_000, torch.Generator().manual_seed(0))
    # uniform on the sphere: sin(lat) uniform in [-1, 1], so a quarter of the points lie above 30 N
    assert float((lat > 30).float().mean()) == pytest.approx(0.25, abs=0.005)
    assert float(lon.min()) >= -180 and float(lon.max()) <= 180


def _neighbour_reference(ds, lat, lon, kind, k, bandwidth_km, alpha, exclude=None):
    train = [int(r) for r in ds.split_rows("train") if int(r) != exclude]
    d = sorted((ref.haversine_km(lat, lon, float(ds.lat[r]), float(ds.lon[r])), r) for r in train)
    counts = np.zeros(ds.num_tags)
    for km, r in d[:k]:
        w = 1.0 if kind == "knn" else math.exp(-0.5 * (km / bandwidth_km) ** 2)
        for t in set(ds.tags_of(r).tolist()):
            counts[t] += w
    gc = np.zeros(ds.num_tags)
    for r in ds.split_rows("train"):
        for t in set(ds.tags_of(int(r)).tolist()):
            gc[t] += 1
    p_global = (gc + 1) / (gc.sum() + ds.num_tags)
    return (counts + alpha * p_global) / (counts.sum() + alpha)


@pytest.mark.parametrize("kind", ["knn", "kde"])
def test_neighbour_priors_match_brute_force(tiny_stores, kind):
    ds = DatasetStore(tiny_stores["dataset"])
    prior = NeighbourPrior(ds, kind, k=15, bandwidth_km=8.0, max_neighbours=15, alpha=2.0)
    test = ds.split_rows("test")[:5]
    got = prior.prior(ds.lat[test], ds.lon[test]).numpy()
    assert np.allclose(got.sum(1), 1.0, atol=1e-5)  # normalised, as it claims
    for i, r in enumerate(test):
        want = _neighbour_reference(ds, float(ds.lat[r]), float(ds.lon[r]), kind, 15, 8.0, 2.0)
        assert np.allclose(got[i], want, atol=1e-6)
    # a training photo left out of its own prior
    r = int(ds.split_rows("train")[3])
    got = prior.prior(ds.lat[[r]], ds.lon[[r]], exclude_rows=[r]).numpy()[0]
    assert np.allclose(
        got, _neighbour_reference(ds, float(ds.lat[r]), float(ds.lon[r]), kind, 15, 8.0, 2.0, exclude=r), atol=1e-6
    )


@pytest.fixture(scope="module")
def geo_prior_run(tiny_stores, tmp_path_factory):
    from locsens.train import train

    out = tmp_path_factory.mktemp("geo_prior") / "run"
    overrides = [
        "experiment=geo_prior",
        f"data.dataset_path={tiny_stores['dataset']}",
        f"paths.output_dir={out}",
        "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "data.batch_size=128",
    ]
    metrics = train(compose("train", overrides))
    return metrics


def test_learned_prior_learns_where_tags_are(geo_prior_run, tiny_stores):
    from locsens.checkpointing import load_model

    model, _ = load_model(geo_prior_run["best_checkpoint"], expect="prior")
    ds = DatasetStore(tiny_stores["dataset"])
    tag = {t: i for i, t in enumerate(ds.vocab)}
    # at Tokyo, "japan" outranks "france"; at Paris the other way round
    lat, lon = torch.tensor([35.68, 48.86]), torch.tensor([139.69, 2.35])
    with torch.no_grad():
        lp = model.net.log_prior(lat, lon)
    assert lp[0, tag["japan"]] > lp[0, tag["france"]] and lp[1, tag["france"]] > lp[1, tag["japan"]]
    assert geo_prior_run["val/A@10"] > 50


def test_prior_skip_is_exact_in_the_engine_and_survives_a_checkpoint(geo_prior_run, tmp_path):
    ckpt = geo_prior_run["best_checkpoint"]
    model = build_locsens(f"model.prior_skip={{checkpoint: {ckpt}, weight: 0.7}}", embed_dim=16)
    model.eval()
    v = model.prior_net.head.out_features
    g = torch.Generator().manual_seed(0)
    images, vocab = torch.randn(5, 16, generator=g), torch.randn(v, 16, generator=g)
    lat, lon = torch.tensor([35.7, 48.9, 40.4, 37.4, 45.8]), torch.tensor([139.7, 2.3, -3.7, -6.0, 4.8])
    ids = torch.arange(v)
    with torch.no_grad():
        want = torch.stack(
            [model(images[i].expand(v, -1), vocab, lat[i].expand(v), lon[i].expand(v), ids) for i in range(5)]
        )
        without = torch.stack(
            [
                model.scorer(
                    model.encode_location(lat[i].expand(v), lon[i].expand(v)),
                    model.encode_image(images[i].expand(v, -1)),
                    model.encode_tag(vocab),
                )
                for i in range(5)
            ]
        )
    assert (want - without).abs().max() > 0.1  # the prior term is there
    engine = ScoringEngine(model, dtype="fp32", chunk_pairs=23, tag_embeddings=vocab)
    assert torch.allclose(engine.score_tags(images, lat, lon), want, atol=1e-5)
    cand = torch.randint(0, v, (5, 9), generator=g)
    assert torch.allclose(engine.score_tags(images, lat, lon, candidates=cand), want.gather(1, cand), atol=1e-5)
    # retrieval: the query's prior is one value per query
    q = torch.tensor([3, 7])
    with torch.no_grad():
        want_r = torch.stack(
            [
                model(images, vocab[q[i]].expand(5, -1), lat[i].expand(5), lon[i].expand(5), q[i].expand(5))
                for i in range(2)
            ]
        )
    assert torch.allclose(engine.score_images(q, lat[:2], lon[:2], images), want_r, atol=1e-5)
    with pytest.raises(ValueError, match="vocabulary ids"):
        engine.score_images(vocab[q], lat[:2], lon[:2], images)
    # the prior's weights and spec live in the LocSens state and hyperparameters
    state, hp = model.state_dict(), dict(model.hparams)
    assert "net" in hp["prior_skip"] and hp["prior_skip"]["checkpoint_sha256"]
    from locsens.models.locsens import LocSens

    rebuilt = LocSens(**{**hp, "prior_skip": {**hp["prior_skip"], "checkpoint": str(tmp_path / "gone.ckpt")}})
    rebuilt.load_state_dict(state, strict=True)
    rebuilt.eval()
    with torch.no_grad():
        assert torch.allclose(
            ScoringEngine(rebuilt, dtype="fp32", tag_embeddings=vocab).score_tags(images, lat, lon), want, atol=1e-5
        )


def test_locsens_with_prior_skip_trains_and_every_prior_is_evaluated(geo_prior_run, tiny_stores, tmp_path):
    """LocSens + prior skip through train(); then one evaluation with the priors alone, MCC x each prior,
    the learned prior's run and the LocSens run, place consistency in every row."""
    import json

    from conftest import evaluate_overrides, write_tiny_embeddings

    from locsens.eval.pipeline import evaluate
    from locsens.train import train

    emb = write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=24)
    stores = {**tiny_stores, "embeddings": emb}
    ckpt = geo_prior_run["best_checkpoint"]
    overrides = [
        "experiment=locsens",
        "trainer=debug",
        "logger=none",
        "data.val_tagging_images=40",
        f"model.prior_skip={{checkpoint: {ckpt}}}",
        f"data.dataset_path={stores['dataset']}",
        f"data.embeddings_path={emb}",
        f"paths.output_dir={tmp_path / 'locsens'}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "data.batch_size=64",
    ]
    run = train(compose("train", overrides))
    assert math.isfinite(run["val/A@10"])
    prior_run = str(__import__("pathlib").Path(ckpt).parent.parent)
    cfg = compose(
        "evaluate",
        evaluate_overrides(
            stores,
            tmp_path / "eval",
            f"runs=[{prior_run},{tmp_path / 'locsens'}]",
            "+methods.knn_prior={kind: prior, prior: knn, k: 20}",
            "+methods.kde_prior={kind: prior, prior: kde, bandwidth_km: 10}",
            f"+methods.emb={{kind: embeddings, model: test-projection, embeddings_path: {emb}}}",
            "+methods.emb_x_knn={kind: product_of_experts, visual: emb, prior: knn_prior}",
        ),
    )
    results = evaluate(cfg)
    names = list(results["tagging"])
    assert {"knn_prior", "kde_prior", "emb_x_knn"} <= set(names) and len(
        names
    ) == 9  # + the prior run and the LocSens run
    for name, r in results["tagging"].items():
        assert 0 <= r["place_consistency"]["wrong_place@10"] <= 100, name
    # the frequency table knows where place names are used: its top-10 rarely names the wrong town
    assert results["tagging"]["town_frequency"]["place_consistency"]["wrong_country@10"] < 5
    tables = (tmp_path / "eval" / "tables.md").read_text()
    assert "Place consistency" in tables and "knn_prior" in tables
    assert any(f.endswith("range_maps.png") for f in results["figures"])  # the learned prior's range maps
    assert (
        json.loads((tmp_path / "eval" / "results.json").read_text())["tagging"]["knn_prior"]["with_places"]["A@10"] > 0
    )


def test_sampled_presence_only_loss_is_unbiased():
    """The loss over a sample of the vocabulary (the batch's tags + uniform others, reweighted) averages to
    the full loss over tag samples (the random locations held fixed)."""
    from locsens.models.geo_prior import GeoPrior

    torch.manual_seed(0)
    model = GeoPrior(num_tags=300, width=16, depth=1, sampled_tags=40, pos_weight=5.0)
    batch = {
        "lat": torch.rand(32) * 120 - 60,
        "lon": torch.rand(32) * 360 - 180,
        "target": torch.randint(0, 300, (32, 3)).masked_fill(torch.rand(32, 3) < 0.3, -1),
    }
    with torch.no_grad():
        full = float(model._loss(batch, 1, sample=False))
        draws = [float(model._loss(batch, 1, sample=True, tag_seed=s)) for s in range(300)]
    assert np.std(draws) > 0  # the sample varies
    assert np.mean(draws) == pytest.approx(full, rel=0.02)
