"""Class 7, safe and clear checkpoint loading: a crafted checkpoint never runs code, even with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; damaged or wrong-kind checkpoints are named with the file."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from conftest import compose, run_cli, train_overrides, write_tiny_embeddings

from locsens.checkpointing import CheckpointError, load_checkpoint, load_model
from locsens.config import ConfigError
from locsens.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FORCE = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


class Payload:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do instead (run anything)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture(scope="module")
def trained(tiny_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    mcc = train(
        compose("train", train_overrides(tiny_stores, root / "mcc", "experiment=mcc", "trainer=debug", "logger=none"))
    )
    return root, mcc["best_checkpoint"]


@pytest.fixture()
def malicious(trained, tmp_path):
    """A run directory whose best checkpoint is a real LocSens-looking checkpoint with a payload inside."""
    root, mcc = trained
    marker = tmp_path / "payload-ran"
    ckpt = torch.load(mcc, weights_only=True)
    ckpt["locsens"]["model_class"] = "locsens.models.locsens.LocSens"
    ckpt["extra"] = Payload(marker)
    run = tmp_path / "evil_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text((root / "mcc" / ".hydra" / "config.yaml").read_text())
    path = run / "checkpoints" / "epoch000.ckpt"
    torch.save(ckpt, path)
    (run / "metrics.json").write_text(json.dumps({"best_checkpoint": str(path), "status": "finished"}))
    return run, path, marker


def test_the_payload_is_real(malicious, monkeypatch):
    """The environment variable does make a plain torch.load run the payload: the threat the loader defends against."""
    _, path, marker = malicious
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.load(path)
    assert marker.exists()


@pytest.mark.parametrize("entry", ["evaluate", "train", "export"])
def test_entry_points_refuse_the_payload_with_the_variable_set(malicious, tiny_stores, entry, tmp_path):
    run, path, marker = malicious
    args = {
        "evaluate": [
            "evaluate.py",
            f"dataset_path={tiny_stores['dataset']}",
            f"runs=[{run}]",
            f"hydra.run.dir={tmp_path / 'e'}",
        ],
        "train": [
            "train.py",
            *train_overrides(tiny_stores, tmp_path / "t", "experiment=mcc", "trainer=debug", "logger=none"),
            f"ckpt_path={path}",
            f"hydra.run.dir={tmp_path / 't'}",
        ],
        "export": [
            "export.py",
            f"checkpoint={path}",
            f"dataset_path={tiny_stores['dataset']}",
            f"features_path={tiny_stores['features']}",
            f"embeddings_path={tmp_path / 'x.h5'}",
        ],
    }[entry]
    proc = run_cli(*args, env=FORCE)
    assert proc.returncode != 0
    assert f"{path}: refused: it holds pickled Python objects" in proc.stderr
    assert "weights_only=False" not in proc.stderr.split("Traceback")[-1].split(str(path))[-1]  # never advised
    assert not marker.exists()


def test_damaged_checkpoints_are_named(trained, tmp_path):
    _, mcc = trained
    data = open(mcc, "rb").read()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = [tmp_path / f"garbage{seed}.ckpt" for seed in range(20)]  # random bytes fail the unpickler in many ways
    for seed, path in enumerate(garbage):
        path.write_bytes(np.random.default_rng(seed).bytes(4096))
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    cases = [
        (truncated, "not a complete PyTorch checkpoint (truncated or corrupt"),
        (text, "not a PyTorch checkpoint"),
        (tmp_path / "missing.ckpt", "no such checkpoint file"),
    ] + [(g, "not a PyTorch checkpoint (unreadable") for g in garbage]
    for path, named in cases:
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(err.value).startswith(f"{path}: ") and named in str(err.value)
        assert "weights_only=False" not in str(err.value)


def test_a_checkpoint_of_the_wrong_kind_is_named(trained, tiny_stores, tmp_path):
    _, mcc = trained
    with pytest.raises(CheckpointError, match=rf"{mcc}: is a checkpoint of MCC, expected a LocSens model"):
        load_model(mcc, expect="locsens")
    emb = write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=8)
    cfg = compose(
        "train",
        train_overrides(
            tiny_stores,
            tmp_path / "r",
            "experiment=locsens",
            "trainer=debug",
            "logger=none",
            f"ckpt_path={mcc}",
            embeddings=emb,
        ),
    )
    with pytest.raises(
        ConfigError, match=r"is a checkpoint of locsens.models.mcc.MCC, but model._target_ is .*LocSens"
    ):
        train(cfg)
    cfg = compose(
        "train",
        train_overrides(
            tiny_stores,
            tmp_path / "r2",
            "experiment=mcc",
            "trainer=debug",
            "logger=none",
            f"ckpt_path={mcc}",
            "model.embed_dim=64",
        ),
    )
    with pytest.raises(
        ConfigError, match=r"trained with other model settings: model.embed_dim: 300 in the checkpoint, 64 now"
    ):
        train(cfg)


def test_a_checkpoint_naming_another_class_is_not_imported(trained, tmp_path):
    _, mcc = trained
    ckpt = torch.load(mcc, weights_only=True)
    ckpt["locsens"]["model_class"] = "os.system"
    path = tmp_path / "other.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"names model class 'os.system', which is not one of locsens' models"):
        load_model(path)
