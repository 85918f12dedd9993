"""train(cfg) and train.py: the run directory, determinism, the experiment configs compose."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose
from hydra.utils import get_class

from locsens.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def compose_cfg(stores, out_dir, extra=()):
    overrides = [
        f"data.dataset_path={stores['dataset']}",
        f"data.features_path={stores['features']}",
        f"paths.output_dir={out_dir}",
        "trainer=debug",
        "data.batch_size=64",
        *extra,
    ]
    return compose("train", overrides=overrides)


def test_train_writes_the_run_directory(tiny_stores, tmp_path):
    metrics = train(compose_cfg(tiny_stores, tmp_path, ["logger=csv", "trainer.max_epochs=2"]))
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    assert "locsens.models.mcc.MCC" in (tmp_path / ".hydra" / "config.yaml").read_text()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert Path(metrics["best_checkpoint"]).parent == tmp_path / "checkpoints"
    assert Path(metrics["best_checkpoint"]).exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    # metrics.json names the checkpoints relative to the run directory (a moved run stays whole)
    assert saved["best_checkpoint"] == f"checkpoints/{Path(metrics['best_checkpoint']).name}"
    assert saved["last_checkpoint"] == "checkpoints/last.ckpt"
    for key in ("best_checkpoint", "last_checkpoint"):
        saved[key] = str(tmp_path / saved[key])
    assert saved == metrics and 0 <= saved["val/A@10"] <= 100
    commit = (tmp_path / "git_commit.txt").read_text().strip()
    assert len(commit.split("-")[0]) == 40 or commit.startswith("unknown")
    assert (tmp_path / "csv" / "metrics.csv").exists()
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_train_is_deterministic_under_a_seed(tiny_stores, tmp_path):
    a = train(compose_cfg(tiny_stores, tmp_path / "a", ["logger=none", "seed=3"]))
    b = train(compose_cfg(tiny_stores, tmp_path / "b", ["logger=none", "seed=3"]))
    c = train(compose_cfg(tiny_stores, tmp_path / "c", ["logger=none", "seed=4"]))
    assert a["train/loss"] == b["train/loss"] and a["val/loss"] == b["val/loss"]
    assert a["train/loss"] != c["train/loss"]


@pytest.mark.parametrize("name", ["mlc", "mcc", "her"])
def test_experiment_configs_compose(name):
    cfg = compose("train", overrides=[f"experiment={name}"])
    assert get_class(cfg.model._target_).__name__.lower() == name
    assert cfg.task_name == name
    assert cfg.data.dataset_path.endswith("demo/dataset.h5")
    assert cfg.model.optimizer._partial_


@pytest.mark.slow  # a fresh interpreter importing torch + lightning: ~30 s on the busy 2-core machine
def test_train_py_entry_point(tiny_stores, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.features_path={tiny_stores['features']}",
            "trainer=debug",
            "+trainer.fast_dev_run=true",
            "logger=none",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / ".hydra" / "overrides.yaml").exists()
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "git_commit.txt").exists()
