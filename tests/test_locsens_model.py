"""LocSens module: shapes, determinism, the forward = composition of its parts, and real Hydra fast_dev_runs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import build_locsens, compose, train_overrides, write_tiny_embeddings

from locsens.checkpointing import load_model
from locsens.models.locsens import LocSens
from locsens.train import train

E, W = 32, 64
FUSIONS = ("concat300", "raw2d", "zeroed", "dropout")
ENCODERS = ("latlon", "wrap", "sphere_multiscale", "multiresolution_grid")
ENCODER_OPTIONS = {
    "sphere_multiscale": ["model.location_encoder.num_scales=4"],
    "multiresolution_grid": ["model.location_encoder.num_levels=3"],
}


def small_model(fusion: str = "concat300", encoder: str = "latlon", *overrides) -> LocSens:
    return build_locsens(
        f"model/fusion={fusion}",
        f"model/location_encoder={encoder}",
        *ENCODER_OPTIONS.get(encoder, []),
        *overrides,
        embed_dim=E,
        width=W,
    )


def random_inputs(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lat = torch.rand(n, generator=g) * 180 - 90
    lon = torch.rand(n, generator=g) * 360 - 180
    return torch.randn(n, E, generator=g), torch.randn(n, E, generator=g), lat, lon


@pytest.mark.parametrize("products", [False, True])
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes_and_eval_forward_is_the_composition(fusion, encoder, products):
    model = small_model(
        fusion, encoder, f"model.scorer.pairwise_products={products}", f"model.scorer.similarity_skip={products}"
    ).eval()
    model.sigma = 0.5  # location sampling never reaches the eval forward
    img, tag, lat, lon = random_inputs(10)
    loc_e = model.encode_location(lat, lon)
    want_dim = model.location_encoder.out_dim if fusion == "raw2d" else W
    assert loc_e.shape == (10, want_dim) and model.location_dim == want_dim
    n_products = (1 if fusion == "raw2d" else 3) if products else 0  # img*tag (+ loc*tag, loc*img with a 64-d location)
    assert (
        model.scorer.layers[0].in_features == want_dim + 2 * W + W * n_products
        and len(model.scorer.interactions) == n_products
    )
    if fusion == "zeroed":
        assert torch.all(loc_e == 0)
    for enc in (model.encode_image(img), model.encode_tag(tag)) + (
        (loc_e,) if fusion in ("concat300", "dropout") else ()
    ):
        assert enc.shape[-1] == W and torch.allclose(enc.norm(dim=-1), torch.ones(10), atol=1e-5)
    with torch.no_grad():
        out = model(img, tag, lat, lon)
        again = model(img, tag, lat, lon)
        parts = {
            "loc": loc_e,
            "img": model.encode_image(img),
            "tag": model.encode_tag(tag),
        }  # the scorer's input, by hand
        x = torch.cat(
            [parts["loc"], parts["img"], parts["tag"], *(parts[a] * parts[b] for a, b in model.scorer.interactions)], -1
        )
        manual = model.scorer.layers(x).squeeze(1)
        if products:  # + w * cos of the inputs, w = 1 at init
            manual = manual + (F.normalize(img, dim=-1) * F.normalize(tag, dim=-1)).sum(-1)
    assert out.shape == (10,)
    assert torch.equal(out, again)  # eval forward: no dropout, no location sampling
    torch.testing.assert_close(out, manual, rtol=0, atol=0)


@pytest.mark.parametrize("products", [False, True])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_leading_dims_and_validation_engine_are_exact(fusion, products):
    """Leading dims broadcast, and the ScoringEngine validation uses ranks a grid as the forward does."""
    from locsens.scoring import ScoringEngine

    model = small_model(
        fusion, "latlon", f"model.scorer.pairwise_products={products}", f"model.scorer.similarity_skip={products}"
    ).eval()
    img, tag, lat, lon = random_inputs(12)
    with torch.no_grad():
        grid = model(
            img[:, None].expand(12, 5, E),
            tag[:5][None].expand(12, 5, E),
            lat[:, None].expand(12, 5),
            lon[:, None].expand(12, 5),
        )
    values, ids = ScoringEngine(model, dtype="fp32", chunk_pairs=7, tag_embeddings=tag[:5]).score_tags(
        img, lat, lon, k=5
    )
    torch.testing.assert_close(
        values, torch.gather(grid, 1, ids), rtol=1e-5, atol=1e-6
    )  # float summation order differs only
    assert torch.equal(ids, torch.argsort(grid, dim=1, descending=True))


def shared_batch(b: int = 16, m: int = 4, n_images: int = 40, n_tags: int = 25, seed: int = 3) -> dict:
    """A triplet batch shaped like the tagging negatives: per group the positive's image, tag and place,
    negatives that keep the image (new tag), keep the tag (new image) or keep both at another place."""
    g = torch.Generator().manual_seed(seed)
    images, tags = torch.randn(n_images, E, generator=g), torch.randn(n_tags, E, generator=g)
    img_i = torch.randint(0, n_images, (b, 1), generator=g).expand(b, m).clone()
    tag_i = torch.randint(0, n_tags, (b, 1), generator=g).expand(b, m).clone()
    kind = torch.randint(0, 3, (b, m - 1), generator=g)
    img_i[:, 1:] = torch.where(kind == 1, torch.randint(0, n_images, (b, m - 1), generator=g), img_i[:, 1:])
    tag_i[:, 1:] = torch.where(kind == 0, torch.randint(0, n_tags, (b, m - 1), generator=g), tag_i[:, 1:])
    lat = (torch.rand(b, 1, generator=g) * 180 - 90).expand(b, m).clone()
    lon = (torch.rand(b, 1, generator=g) * 360 - 180).expand(b, m).clone()
    moved = kind == 2
    lat[:, 1:][moved], lon[:, 1:][moved] = lat[:, 0].roll(1)[:, None].expand(b, m - 1)[moved], 0.0
    return {
        "image": images[img_i],
        "tag": tags[tag_i],
        "image_index": img_i,
        "tag_index": tag_i,
        "lat": lat,
        "lon": lon,
    }


@pytest.mark.parametrize(
    "fusion, encoder, extra",
    [
        ("concat300", "latlon", []),
        (
            "concat300",
            "multiresolution_grid",
            ["model.scorer.pairwise_products=true", "model.scorer.similarity_skip=true"],
        ),
        ("raw2d", "sphere_multiscale", ["model.scorer.pairwise_products=true"]),
        ("zeroed", "latlon", ["model.scorer.similarity_skip=true"]),
        ("dropout", "wrap", ["model.scorer.pairwise_products=true"]),
    ],
)
def test_distinct_inputs_once_is_the_triplet_by_triplet_step(fusion, encoder, extra):
    """The training step with each distinct image, tag and place encoded once (the batch's indices) gives
    the per-triplet step's scores, loss and gradients, to float rounding; location dropout draws alike."""
    results = []
    for with_index in (True, False):
        model = small_model(fusion, encoder, *extra).train()
        model.log = lambda *args, **kwargs: None
        batch = shared_batch()
        if not with_index:
            batch = {k: v for k, v in batch.items() if not k.endswith("_index")}
        torch.manual_seed(5)
        loss = model.training_step(batch, 0)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.manual_seed(5)
        with torch.no_grad():
            scores = model._group_scores(batch, batch["lat"], batch["lon"], drop_p=0.5)
        results.append((loss.detach(), grads, scores))
    (loss_a, grads_a, scores_a), (loss_b, grads_b, scores_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scores_a, scores_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


def test_paper_init_and_loss():
    model = build_locsens(hidden=(256, 256), groups=32)
    w = model.scorer.layers[0].weight
    assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.001
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, torch.nn.Linear))
    scores = torch.tensor([[1.0, 0.95, 0.5, 1.2]])  # pairs: 0.05 -> 0.05 loss, 0.5 -> 0, -0.2 -> 0.3
    assert model.ranking_loss(scores).item() == pytest.approx((0.05 + 0.0 + 0.3) / 3)


def test_progressive_drop_probability():
    m = small_model("dropout", "latlon", "model.progressive_warmup_epochs=2", "model.progressive_ramp_epochs=1")
    assert [m.location_drop_probability(e) for e in range(5)] == [1.0, 1.0, 0.75, 0.5, 0.5]
    assert small_model("concat300").location_drop_probability(0) == 0.0


def test_training_step_samples_locations_and_drops_only_in_training():
    model = small_model(
        "dropout",
        "latlon",
        "model.location_dropout=1.0",
        "model.progressive_warmup_epochs=0",
        "model.progressive_ramp_epochs=0",
    )
    model.log = lambda *a, **k: None
    b, m = 8, 4
    batch = {
        "image": torch.randn(b, m, E),
        "tag": torch.randn(b, m, E),
        "lat": torch.zeros(b),
        "lon": torch.zeros(b),
        "tag_index": torch.zeros(b, m, dtype=torch.long),
    }
    with torch.no_grad():
        zeroed = small_model("zeroed")
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
    with pytest.raises(
        Exception, match=r"model.scorer \(locsens.models.scorer.Scorer\): scorer.hidden=\[60\] .*divisible"
    ):
        build_locsens(hidden=(60,))
    with pytest.raises(
        ValueError, match=r"model.location_encoder._target_='os.path.join': a LocSens part must be one of locsens' own"
    ):
        LocSens(embed_dim=E, location_encoder={"_target_": "os.path.join"})
    with pytest.raises(Exception, match="must agree"):
        build_locsens("model.tag_branch.out_dim=32")


# ----------------------------------------------------------------------------------------------
# the real Hydra config through locsens.train.train
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tiny_stores, tmp_path_factory):
    emb = write_tiny_embeddings(tiny_stores, tmp_path_factory.mktemp("emb") / "mcc.h5")
    return {"dataset": tiny_stores["dataset"], "features": tiny_stores["features"], "embeddings": emb}


def compose_locsens(world, out_dir, *overrides):
    return compose(
        "train",
        train_overrides(
            world,
            out_dir,
            "experiment=locsens",
            "trainer=debug",
            "logger=none",
            "data.batch_size=32",
            "data.val_tagging_images=60",
            "data.val_batch_size=30",
            "model.val_min_query_images=2",
            *overrides,
            embeddings=world["embeddings"],
        ),
    )


SLOW = pytest.mark.slow  # each run is a few seconds alone, ~15 s on the shared 2 cores


@pytest.mark.parametrize(
    "overrides",
    [
        ["model/fusion=concat300"],
        pytest.param(["model/fusion=raw2d"], marks=SLOW),
        pytest.param(["model/fusion=zeroed"], marks=SLOW),
        pytest.param(["model/fusion=dropout"], marks=SLOW),
        pytest.param(["model/location_encoder=wrap"], marks=SLOW),
        pytest.param(["model/location_encoder=sphere_multiscale"], marks=SLOW),
        ["model/fusion=raw2d", "model/location_encoder=sphere_multiscale"],
        [
            "model.scorer.pairwise_products=true",
            "model/location_encoder=multiresolution_grid",
            "data.tag_negative_power=0.75",
        ],
    ],
    ids=lambda o: ",".join(x.split("=")[1] for x in o),
)
def test_fast_dev_run_through_hydra(world, tmp_path, overrides):
    cfg = compose_locsens(
        world,
        tmp_path,
        "+trainer.fast_dev_run=true",
        "callbacks/sigma_schedule=linear",
        "callbacks.sigma_schedule.total=5",
        *overrides,
    )
    metrics = train(cfg)
    for key in ("train/loss", "val/loss", "val/A@10", "val/P@10@25km", "val/P@10@200km", "sigma", "sigma_km"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert metrics["sigma"] == 1.0 and metrics["sigma_km"] == pytest.approx(
        20015.1, abs=1
    )  # linear schedule over 5 epochs, at epoch 0


@SLOW
def test_short_run_learns_checkpoints_by_a10_and_reloads(world, tmp_path):
    cfg = compose_locsens(
        world, tmp_path, "trainer.max_epochs=3", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null"
    )
    metrics = train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["val/A@10"] == pytest.approx(metrics["val/A@10"])
    assert metrics["train/pair_accuracy"] > 0.7  # chance is 0.5 (measured ~0.8 after 3 epochs with AdamW)
    best = metrics["best_checkpoint"]
    assert "epoch" in best and metrics["best_score"] >= metrics["val/A@10"] - 1e-6
    model, _ = load_model(best, expect="locsens")
    assert model.hparams.embed_dim == 300 and model.optimizer_spec is None
    _, _, lat, lon = random_inputs(4)
    with torch.no_grad():
        out = model(torch.randn(4, 300), torch.randn(4, 300), lat, lon)
    assert out.shape == (4,) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "experiment, location_branch, schedule",
    [
        ("locsens", "Branch", "constant"),
        ("locsens_zeroed", "ZeroBranch", "constant"),
        ("locsens_raw2d", None, "constant"),
        ("locsens_dropout", "Branch", "constant"),
        ("locsens_sigma", "Branch", "exponential"),
        ("locsens_paper", "Branch", "constant"),
    ],
)
def test_experiments_compose(experiment, location_branch, schedule):
    cfg = compose("train", [f"experiment={experiment}"])
    assert cfg.model._target_ == "locsens.models.locsens.LocSens"
    assert (cfg.model.location_branch and cfg.model.location_branch._target_.rsplit(".", 1)[1]) == location_branch
    assert cfg.callbacks.sigma_schedule.kind == schedule and cfg.callbacks.model_checkpoint.monitor == "val/A@10"
    assert cfg.data.num_negatives == cfg.model.num_negatives == 6
    if experiment == "locsens_paper":
        assert (
            list(cfg.model.scorer.hidden) == [2048, 2048, 2048, 1024, 512]
            and cfg.model.optimizer._target_ == "torch.optim.SGD"
        )
        assert cfg.model.location_encoder._target_.endswith("LatLonEncoder") and not cfg.model.scorer.pairwise_products


def test_the_recipe_lists_its_departures_from_the_paper():
    """experiment=locsens differs from experiment=locsens_paper in exactly the keys its overlays name."""
    from omegaconf import OmegaConf

    def flat(node, prefix=""):
        out = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    paper = flat(OmegaConf.to_container(compose("train", ["experiment=locsens_paper"])))
    recipe = flat(OmegaConf.to_container(compose("train", ["experiment=locsens"])))
    differ = {k for k in set(paper) | set(recipe) if paper.get(k) != recipe.get(k)}
    assert differ == {
        "task_name",
        "model.scorer.hidden",
        "model.scorer.pairwise_products",
        "model.scorer.similarity_skip",
        "model.optimizer._target_",
        "model.optimizer.lr",
        "model.optimizer.momentum",
        "data.batch_size",
        "data.val_tagging_images",
        "data.tag_negative_power",
        "data.location_swap_prob",
        "model.location_encoder._target_",
        "model.location_encoder.num_levels",
        "model.location_encoder.min_cell_km",
        "model.location_encoder.max_cell_km",
        "model.location_encoder.table_size",
        "model.location_encoder.features",
        "model.location_encoder.lr_scale",
    }


@pytest.mark.parametrize(
    "sweep, key, values",
    [
        ("sigma", "callbacks.sigma_schedule.sigma_end", "1.0,0.1,0.05,0.01,0.0"),
        ("fusion", "model/fusion", "concat300,raw2d,zeroed,dropout"),
        ("location_encoder", "model/location_encoder", "latlon,wrap,sphere_multiscale,multiresolution_grid"),
    ],
)
def test_sweeps_compose(sweep, key, values):
    cfg = compose("train", [f"sweep={sweep}"])

    cfg = compose("train", [f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params[key] == values
    assert cfg.model._target_ == "locsens.models.locsens.LocSens"  # the sweep selects its experiment by itself
    for value in values.split(","):  # every swept value is itself a valid override
        compose("train", ["experiment=locsens_paper", f"sweep={sweep}", f"{key}={value}"])


def test_a_learned_grid_gets_its_own_optimiser_group():
    grid = [
        "model/location_encoder=multiresolution_grid",
        "model.location_encoder.num_levels=3",
        "model.location_encoder.table_size=64",
        "model.location_encoder.min_cell_km=100",
        "model.location_encoder.max_cell_km=1000",
    ]
    adamw = ["model/optimizer=adamw", "model.optimizer.lr=2e-3"]
    opt = build_locsens(*grid, *adamw, "model.location_encoder.lr_scale=10").configure_optimizers()
    assert [g["lr"] for g in opt.param_groups] == [2e-3, pytest.approx(2e-2)]
    assert opt.param_groups[1]["weight_decay"] == 0.0 and len(opt.param_groups[1]["params"]) == 1  # the tables
    assert len(build_locsens(*adamw).configure_optimizers().param_groups) == 1  # latlon: no parameters of its own
    assert (
        len(build_locsens(*grid, *adamw, "model.location_encoder.lr_scale=1").configure_optimizers().param_groups) == 1
    )
    with pytest.raises(
        Exception, match=r"model.location_encoder \(.*MultiResolutionGridEncoder\): .*lr_scale=0 must be > 0"
    ):
        build_locsens(*grid, "model.location_encoder.lr_scale=0")
