"""LocSens module: shapes, determinism, the forward = composition contract, and real Hydra fast_dev_runs."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from conftest import write_tiny_embeddings

from locsens.models.locsens import FUSIONS, LocSens
from locsens.models.location_encoders import LOCATION_ENCODERS, build_location_encoder
from locsens.train import train

CONF_DIR = str((__import__("pathlib").Path(__file__).resolve().parents[1] / "conf"))
E = 32


def small_model(**kw) -> LocSens:
    args = dict(embed_dim=E, branch_dim=64, hidden=[64, 32], groups=8, num_negatives=3)
    args.update(kw)
    torch.manual_seed(0)
    return LocSens(**args)


def random_inputs(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g) * 180 - 90
    lon = torch.rand(n, generator=g) * 360 - 180
    return torch.randn(n, E, generator=g), torch.randn(n, E, generator=g), lat, lon


@pytest.mark.parametrize("products", [False, True])
@pytest.mark.parametrize("encoder", LOCATION_ENCODERS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes_and_eval_forward_is_the_composition(fusion, encoder, products):
    model = small_model(fusion=fusion, location_encoder=encoder, num_scales=4, sigma=0.5, pairwise_products=products,
                        similarity_skip=products).eval()
    img, tag, lat, lon = random_inputs(10)
    loc_e = model.encode_location(lat, lon)
    want_dim = build_location_encoder(encoder, num_scales=4).out_dim if fusion == "raw2d" else 64
    assert loc_e.shape == (10, want_dim) and model.location_dim == want_dim
    n_products = (1 if fusion == "raw2d" else 3) if products else 0  # img*tag (+ loc*tag, loc*img with a 64-d location)
    assert model.scorer[0].in_features == want_dim + 2 * 64 + 64 * n_products and len(model.interactions) == n_products
    if fusion == "zeroed":
        assert torch.all(loc_e == 0)
    for enc in (model.encode_image(img), model.encode_tag(tag)) + ((loc_e,) if fusion in ("concat300", "dropout") else ()):
        assert enc.shape[-1] == 64 and torch.allclose(enc.norm(dim=-1), torch.ones(10), atol=1e-5)
    with torch.no_grad():
        out = model(img, tag, lat, lon)
        again = model(img, tag, lat, lon)
        manual = model.score_encoded(loc_e, model.encode_image(img), model.encode_tag(tag))
        if products:  # + w * cos of the inputs, w = 1 at init
            manual = manual + (torch.nn.functional.normalize(img, dim=-1) * torch.nn.functional.normalize(tag, dim=-1)).sum(-1)
    assert out.shape == (10,)
    assert torch.equal(out, again)  # eval forward: no dropout, no location sampling
    torch.testing.assert_close(out, manual, rtol=0, atol=0)


@pytest.mark.parametrize("products", [False, True])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_leading_dims_and_validation_engine_are_exact(fusion, products):
    """Leading dims broadcast, and the ScoringEngine validation uses ranks a grid as the forward does."""
    from locsens.scoring import ScoringEngine

    model = small_model(fusion=fusion, pairwise_products=products, similarity_skip=products).eval()
    img, tag, lat, lon = random_inputs(12)
    with torch.no_grad():
        grid = model(img[:, None].expand(12, 5, E), tag[:5][None].expand(12, 5, E), lat[:, None].expand(12, 5), lon[:, None].expand(12, 5))
    values, ids = ScoringEngine(model, dtype="fp32", chunk_pairs=7, tag_embeddings=tag[:5]).score_tags(img, lat, lon, k=5)
    torch.testing.assert_close(values, torch.gather(grid, 1, ids), rtol=1e-5, atol=1e-6)  # float summation order differs only
    assert torch.equal(ids, torch.argsort(grid, dim=1, descending=True))


def test_paper_init_and_loss():
    model = small_model(hidden=[256, 256], groups=32)
    w = model.scorer[0].weight
    assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.001
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, torch.nn.Linear))
    scores = torch.tensor([[1.0, 0.95, 0.5, 1.2]])  # pairs: 0.05 -> 0.05 loss, 0.5 -> 0, -0.2 -> 0.3
    assert model.ranking_loss(scores).item() == pytest.approx((0.05 + 0.0 + 0.3) / 3)


def test_progressive_drop_probability():
    m = small_model(fusion="dropout", location_dropout=0.5, progressive_warmup_epochs=2, progressive_ramp_epochs=1)
    assert [m.location_drop_probability(e) for e in range(5)] == [1.0, 1.0, 0.75, 0.5, 0.5]
    assert small_model(fusion="concat300").location_drop_probability(0) == 0.0


def test_training_step_samples_locations_and_drops_only_in_training():
    model = small_model(fusion="dropout", location_dropout=1.0)
    model.log = lambda *a, **k: None
    b, m = 8, 4
    batch = {"image": torch.randn(b, m, E), "tag": torch.randn(b, m, E), "lat": torch.zeros(b), "lon": torch.zeros(b),
             "tag_index": torch.zeros(b, m, dtype=torch.long)}
    with torch.no_grad():
        zeroed = small_model(fusion="zeroed")
        zeroed.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("location_branch")})
        loss = model.training_step(batch, 0)
        scores = zeroed._group_scores(batch, batch["lat"][:, None].expand(b, m), batch["lon"][:, None].expand(b, m))
    assert loss.item() == pytest.approx(zeroed.ranking_loss(scores).item(), abs=1e-6)  # p = 1: location fully zeroed
    bad = dict(batch, image=torch.randn(b, 6, E), tag=torch.randn(b, 6, E))
    with pytest.raises(ValueError, match="num_negatives"):
        model.training_step(bad, 0)


def test_bad_config_fails_clearly():
    with pytest.raises(ValueError, match="embed_dim"):
        LocSens(embed_dim=None)
    with pytest.raises(ValueError, match="fusion"):
        small_model(fusion="late")
    with pytest.raises(ValueError, match="divisible"):
        small_model(hidden=[60])
    with pytest.raises(ValueError, match="location_encoder"):
        small_model(location_encoder="h3")


# ----------------------------------------------------------------------------------------------
# the real Hydra config through locsens.train.train
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tiny_stores, tmp_path_factory):
    emb = write_tiny_embeddings(tiny_stores, tmp_path_factory.mktemp("emb") / "mcc.h5")
    return {"dataset": tiny_stores["dataset"], "embeddings": emb}


def compose_locsens(world, out_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[
            "experiment=locsens", "trainer=debug", "logger=none", f"paths.output_dir={out_dir}",
            f"data.dataset_path={world['dataset']}", f"data.embeddings_path={world['embeddings']}",
            "data.batch_size=32", "data.val_tagging_images=60", "data.val_batch_size=30", "model.val_min_query_images=2", *overrides])


SLOW = pytest.mark.slow  # each run is a few seconds alone, ~15 s on the shared 2 cores


@pytest.mark.parametrize("overrides", [
    ["model/fusion=concat300"],
    pytest.param(["model/fusion=raw2d"], marks=SLOW), pytest.param(["model/fusion=zeroed"], marks=SLOW),
    pytest.param(["model/fusion=dropout"], marks=SLOW), pytest.param(["model/location_encoder=wrap"], marks=SLOW),
    pytest.param(["model/location_encoder=sphere_multiscale"], marks=SLOW),
    ["model/fusion=raw2d", "model/location_encoder=sphere_multiscale"],
    ["model.pairwise_products=true", "model/location_encoder=multiresolution_grid", "data.tag_negative_power=0.75"],
], ids=lambda o: ",".join(x.split("=")[1] for x in o))
def test_fast_dev_run_through_hydra(world, tmp_path, overrides):
    cfg = compose_locsens(world, tmp_path, "+trainer.fast_dev_run=true", "callbacks/sigma_schedule=linear", "callbacks.sigma_schedule.total=5", *overrides)
    metrics = train(cfg)
    for key in ("train/loss", "val/loss", "val/A@10", "val/P@10@25km", "val/P@10@200km", "sigma", "sigma_km"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert metrics["sigma"] == 1.0 and metrics["sigma_km"] == pytest.approx(20015.1, abs=1)  # linear schedule over 5 epochs, at epoch 0


@SLOW
def test_short_run_learns_checkpoints_by_a10_and_reloads(world, tmp_path):
    cfg = compose_locsens(world, tmp_path, "trainer.max_epochs=3", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null")
    metrics = train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["val/A@10"] == pytest.approx(metrics["val/A@10"])
    assert metrics["train/pair_accuracy"] > 0.7  # chance is 0.5 (measured ~0.8 after 3 epochs with AdamW)
    best = metrics["best_checkpoint"]
    assert "epoch" in best and metrics["best_score"] >= metrics["val/A@10"] - 1e-6
    model = LocSens.load_from_checkpoint(best, map_location="cpu").eval()
    assert model.hparams.embed_dim == 300 and model.optimizer_factory is None
    img, tag, lat, lon = (t for t in random_inputs(4))
    with torch.no_grad():
        out = model(torch.randn(4, 300), torch.randn(4, 300), lat, lon)
    assert out.shape == (4,) and torch.isfinite(out).all()


def test_configure_optimizers_uses_the_partial():
    model = small_model(optimizer=functools.partial(torch.optim.SGD, lr=0.5, momentum=0.9))
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.5


@pytest.mark.parametrize("experiment, fusion, schedule", [
    ("locsens", "concat300", "constant"), ("locsens_zeroed", "zeroed", "constant"), ("locsens_raw2d", "raw2d", "constant"),
    ("locsens_dropout", "dropout", "constant"), ("locsens_sigma", "concat300", "exponential"), ("locsens_paper", "concat300", "constant"),
])
def test_experiments_compose(experiment, fusion, schedule):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    assert cfg.model._target_ == "locsens.models.locsens.LocSens" and cfg.model.fusion == fusion
    assert cfg.callbacks.sigma_schedule.kind == schedule and cfg.callbacks.model_checkpoint.monitor == "val/A@10"
    assert cfg.data.num_negatives == cfg.model.num_negatives == 6
    if experiment == "locsens_paper":
        assert list(cfg.model.hidden) == [2048, 2048, 2048, 1024, 512] and cfg.model.optimizer._target_ == "torch.optim.SGD"


@pytest.mark.parametrize("sweep, key, values", [
    ("sigma", "callbacks.sigma_schedule.sigma_end", "1.0,0.1,0.05,0.01,0.0"),
    ("fusion", "model/fusion", "concat300,raw2d,zeroed,dropout"),
    ("location_encoder", "model/location_encoder", "latlon,wrap,sphere_multiscale,multiresolution_grid"),
])
def test_sweeps_compose(sweep, key, values):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params[key] == values
    assert cfg.model._target_ == "locsens.models.locsens.LocSens"  # the sweep selects experiment=locsens by itself
    for value in values.split(","):  # every swept value is itself a valid override
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose("train", overrides=["experiment=locsens_paper", f"sweep={sweep}", f"{key}={value}"])


def test_location_lr_scale_gives_the_grid_its_own_group():
    adamw = functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=1e-4)
    grid = dict(location_encoder="multiresolution_grid", num_scales=3, min_radius_km=100.0, max_radius_km=1000.0, grid_table_size=64)
    opt = small_model(optimizer=adamw, location_lr_scale=10.0, **grid).configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [2e-3, pytest.approx(2e-2)]
    assert opt.param_groups[1]["weight_decay"] == 0.0 and len(opt.param_groups[1]["params"]) == 1  # the tables
    assert len(small_model(optimizer=adamw, location_lr_scale=10.0).configure_optimizers().param_groups) == 1  # latlon: no parameters
    assert len(small_model(optimizer=adamw, **grid).configure_optimizers().param_groups) == 1  # scale 1: the paper's single group
    with pytest.raises(ValueError, match="location_lr_scale"):
        small_model(optimizer=lambda params: torch.optim.SGD(params, lr=0.1), location_lr_scale=10.0, **grid).configure_optimizers()
    with pytest.raises(ValueError, match="location_lr_scale"):
        small_model(location_lr_scale=0.0)
