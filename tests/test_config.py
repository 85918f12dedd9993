"""locsens.config: a composed config fails before any work, naming the key (real configs, hydra.compose)."""

import pytest
from conftest import CONF, compose

from locsens.config import ConfigError, validate_evaluate_config, validate_train_config
from locsens.train import train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
OVERLAYS = [f"experiment={name}" for name in EXPERIMENTS] + [
    f"{group}={p.stem}" for group in ("sweep", "debug") for p in sorted((CONF / group).glob("*.yaml"))
]


def compose_train(stores, extra=(), config_dir=CONF, name="train"):
    overrides = [f"data.dataset_path={stores['dataset']}", "paths.output_dir=/nonexistent/never-written", *extra]
    if "features" in stores:
        overrides.append(f"data.features_path={stores['features']}")
    return compose(name, overrides, config_dir=config_dir)


def test_every_experiment_sweep_and_debug_config_of_the_repo_validates(tiny_stores):
    assert len(OVERLAYS) > len(EXPERIMENTS)
    for overlay in OVERLAYS:  # LocSens experiments read an embeddings store: any existing file stands in
        data = compose("train", overrides=[overlay]).data
        # LocSens reads an embeddings store, the agnostic models a feature store, a location prior neither
        second = [
            f"data.{key}={tiny_stores['features']}" for key in ("embeddings_path", "features_path") if key in data
        ][:1]
        validate_train_config(compose_train({"dataset": tiny_stores["dataset"]}, [overlay, *second]))


@pytest.mark.parametrize(
    "key,world_hint",
    [("data.dataset_path", "prepare.py world=nowhere"), ("data.features_path", "prepare.py world=nowhere")],
)
def test_missing_store_names_the_key_and_the_fix(tmp_path, key, world_hint):
    cfg = compose("train", overrides=[f"paths.data_dir={tmp_path}", "world=nowhere", "paths.output_dir=/never"])
    if key == "data.features_path":  # the dataset store exists, the feature store does not
        (tmp_path / "nowhere").mkdir()
        (tmp_path / "nowhere" / "dataset.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=rf"{key}: {tmp_path}/nowhere/\w+\.h5 does not exist.*{world_hint}"):
        validate_train_config(cfg)


def test_missing_embeddings_suggest_export(tiny_stores, tmp_path):
    cfg = compose_train(
        {"dataset": tiny_stores["dataset"]}, ["experiment=locsens", f"data.embeddings_path={tmp_path}/mcc.h5"]
    )
    with pytest.raises(FileNotFoundError, match=r"data.embeddings_path: .*mcc.h5 does not exist.*export.py"):
        validate_train_config(cfg)


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.batch_size=-4", "data.batch_size"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("model.optimizer.lr=0", "model.optimizer.lr"),
        ("model.optimizer.lr=-0.1", "model.optimizer.lr"),
        ("data.batch_size=abc", "data.batch_size"),  # a wrong type
    ],
)
def test_impossible_values_of_the_agnostic_models(tiny_stores, override, key):
    cfg = compose_train(tiny_stores, [override])
    with pytest.raises(ConfigError, match=rf"^{key}=.*expected"):
        validate_train_config(cfg)


@pytest.mark.parametrize(
    "override,key,expected",
    [
        ("model.num_negatives=0", "model.num_negatives", "positive integer"),
        ("model.margin=-0.1", "model.margin", ">= 0"),
        ("callbacks.sigma_schedule.sigma_start=-0.5", "callbacks.sigma_schedule.sigma_start", ">= 0"),
        ("callbacks.sigma_schedule.sigma_end=-0.01", "callbacks.sigma_schedule.sigma_end", ">= 0"),
        ("model.val_ks=[0,10]", "model.val_ks", "k >= 1"),
        ("model.val_ks=[-1]", "model.val_ks", "k >= 1"),
        ("model.location_dropout=1.5", "model.location_dropout", "in \\[0, 1\\]"),
        ("model.scorer.hidden=[]", "model.scorer.hidden", "non-empty list"),
        ("model.location_encoder.lr_scale=0", "model.location_encoder.lr_scale", "positive number"),
        ("data.negative_mode=hard", "data.negative_mode", "one of retrieval, tagging"),
    ],
)
def test_impossible_values_of_locsens(tiny_stores, override, key, expected):
    cfg = compose_train(
        {"dataset": tiny_stores["dataset"]},
        ["experiment=locsens_sigma", f"data.embeddings_path={tiny_stores['features']}", override],
    )
    with pytest.raises(ConfigError, match=rf"^{key}=.*expected .*{expected}"):
        validate_train_config(cfg)


def test_a_typo_inside_an_experiment_yaml_is_caught_with_a_suggestion(tiny_stores, tmp_path):
    """Hydra merges a yaml typo silently; the validator checks keys against the _target_'s signature."""
    conf = tmp_path / "conf"
    conf.mkdir()
    for item in CONF.iterdir():  # the real config tree plus one experiment with a typo
        (conf / item.name).symlink_to(item)
    (conf / "experiment").unlink()
    (conf / "experiment").mkdir()
    for item in (CONF / "experiment").iterdir():
        (conf / "experiment" / item.name).symlink_to(item)
    (conf / "experiment" / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - locsens\nmodel:\n  num_negativs: 3\n"
    )
    cfg = compose_train(
        {"dataset": tiny_stores["dataset"]},
        ["experiment=typo", f"data.embeddings_path={tiny_stores['features']}"],
        config_dir=conf,
    )
    with pytest.raises(
        ConfigError,
        match=r"model.num_negativs: not a parameter of locsens.models.locsens.LocSens; did you mean 'num_negatives'",
    ):
        validate_train_config(cfg)


@pytest.mark.parametrize(
    "override,key,hint",
    [
        ("+trainer.max_epoch=3", "trainer.max_epochs", "max_epochs"),  # `+` lets Hydra add it; we still catch it
        ("+model.optimizer.momentun=0.5", "model.optimizer.momentun", "momentum"),
        ("+callbacks.model_checkpoint.monitr=x", "callbacks.model_checkpoint.monitr", "monitor"),
        ("+sed=3", "sed", "seed"),
    ],
)
def test_unknown_added_keys_are_caught(tiny_stores, override, key, hint):
    cfg = compose_train(tiny_stores, [override])
    key = override[1:].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: .*did you mean '{hint}'"):
        validate_train_config(cfg)


def test_train_validates_before_any_work(tiny_stores, tmp_path):
    """train() fails on a bad value before it creates the run directory or reads a store."""
    out = tmp_path / "run"
    cfg = compose(
        "train",
        overrides=[
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.features_path={tiny_stores['features']}",
            f"paths.output_dir={out}",
            "trainer=debug",
            "logger=none",
            "data.batch_size=0",
        ],
    )
    with pytest.raises(ConfigError, match="data.batch_size"):
        train(cfg)
    assert not out.exists()


def test_evaluate_config_checks(tiny_stores, tmp_path):
    def cfg_with(*extra):
        return compose(
            "evaluate", overrides=[f"dataset_path={tiny_stores['dataset']}", f"output_dir={tmp_path}", *extra]
        )

    validate_evaluate_config(cfg_with())
    for override, key in [
        ("tagging.ks=[0,10]", "tagging.ks"),
        ("retrieval.k=0", "retrieval.k"),
        ("retrieval.thresholds_km=[-1]", "retrieval.thresholds_km"),
        ("wandb.mode=online2", "wandb.mode"),
        ("chunk_images=0", "chunk_images"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{key}="):
            validate_evaluate_config(cfg_with(override))
    with pytest.raises(FileNotFoundError, match=r"dataset_path: .*missing.h5 does not exist.*prepare.py"):
        validate_evaluate_config(cfg_with(f"dataset_path={tmp_path}/missing.h5"))
