"""Hydra multiruns through train.py: jobs in parallel processes (joblib), each a complete run directory,
all found by evaluate's ``runs=[<multirun dir>]``. The SLURM launcher config is checked where its plugin is installed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, compose

from locsens.eval.pipeline import methods_from_runs


@pytest.mark.slow  # a Hydra multirun: a fresh interpreter plus two joblib worker processes importing torch
def test_joblib_multirun_writes_two_complete_runs(tiny_stores, tmp_path):
    """Two tiny LocSens jobs (evaluate's ``runs=`` takes LocSens runs) on a stand-in MCC embedding store."""
    from conftest import write_tiny_embeddings

    emb = write_tiny_embeddings(tiny_stores, tmp_path / "mcc.h5", dim=16)
    sweep = tmp_path / "multirun"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "seed=0,1",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "experiment=locsens",
            f"data.dataset_path={tiny_stores['dataset']}",
            f"data.embeddings_path={emb}",
            "trainer=debug",
            "logger=none",
            "data.batch_size=32",
            "data.val_tagging_images=40",
            "data.val_retrieval_queries=10",
            "model.scorer.hidden=[32,32]",
            "model.image_branch.out_dim=32",
            "model.tag_branch.out_dim=32",
            "task_name=locsens_seeds",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["launcher"]["_target_"].endswith(
        "JoblibLauncher"
    )
    metrics = {}
    for job in ("0", "1"):
        job_dir = sweep / job
        cfg = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
        assert cfg["seed"] == int(job) and cfg["task_name"] == "locsens_seeds"
        assert (job_dir / "checkpoints" / "last.ckpt").exists()
        assert (job_dir / "git_commit.txt").exists()
        metrics[job] = json.loads((job_dir / "metrics.json").read_text())
        assert metrics[job]["best_checkpoint"].startswith("checkpoints/")  # relative to the job's directory
    weights = [
        torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for job in ("0", "1")
    ]
    assert not torch.equal(
        weights[0]["scorer.layers.0.weight"], weights[1]["scorer.layers.0.weight"]
    )  # two seeds, two different runs

    specs = methods_from_runs([sweep], tiny_stores["dataset"])  # what `python evaluate.py runs=[<multirun dir>]` builds
    assert len(specs) == 2 and all(s["kind"] == "locsens" and s["embeddings_path"] == str(emb) for s in specs.values())
    assert sorted(Path(s["checkpoint"]).parent.parent.name for s in specs.values()) == ["0", "1"]
    assert all("seed=" in name for name in specs)  # named after the task and what the sweep changed


def test_slurm_launcher_config():
    """conf/hydra/launcher/slurm.yaml composes onto the submitit plugin's schema (needs the `slurm` extra)."""
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is the optional `slurm` extra"
    )
    cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.timeout_min == 240
