"""Class 1, checkpoints and resume: a run killed mid-epoch and resumed ends exactly as the uninterrupted run.

Every run here is ``python train.py ...`` in a subprocess, killed by a real signal (SIGKILL: no cleanup
at all; SIGTERM: the scheduler's preemption) from inside the training loop (``killers.KillAt``)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import run_cli, train_overrides, write_tiny_embeddings

from locsens.artifacts import RunLayout

EPOCHS = 4
KILL = ["+callbacks.kill._target_=killers.KillAt", "+callbacks.kill.epoch=2", "+callbacks.kill.batch=4"]


@pytest.fixture(scope="module")
def embeddings(tiny_stores, tmp_path_factory):
    return write_tiny_embeddings(tiny_stores, tmp_path_factory.mktemp("emb") / "mcc.h5", dim=16)


def overrides(kind: str, stores, embeddings, run_dir) -> list[str]:
    common = [f"hydra.run.dir={run_dir}", f"trainer.max_epochs={EPOCHS}"]
    if kind == "mcc":  # the best epoch by val/A@1 moves around on the tiny store: both resume paths get exercised
        return train_overrides(stores, run_dir, "experiment=mcc", "callbacks.model_checkpoint.monitor=val/A@1", *common)
    # LocSens with sigma sampling (torch's RNG) and validation every 2 epochs
    return train_overrides(
        stores,
        run_dir,
        "experiment=locsens",
        "callbacks/sigma_schedule=exponential",
        "data.val_tagging_images=50",
        *common,
        embeddings=embeddings,
    )


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def final(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in ("best_checkpoint", "last_checkpoint", "resumed_from", "made_from")}


@pytest.fixture(scope="module", params=["mcc", "locsens"])
def runs(request, tiny_stores, embeddings, tmp_path_factory):
    """An uninterrupted run, and a run SIGKILLed mid-epoch 2, resumed once into a NEW directory
    (``resumed_new``) and then in its OWN (``killed``)."""
    kind, root = request.param, tmp_path_factory.mktemp(f"resume_{request.param}")
    args = lambda d: overrides(kind, tiny_stores, embeddings, root / d)  # noqa: E731
    run_cli("train.py", *args("full"), check=True)
    proc = run_cli("train.py", *args("killed"), *KILL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (root / "killed" / "metrics.json").exists()  # a killed run is not a finished run
    assert (
        torch.load(root / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    )  # the last whole epoch
    run_cli("train.py", *args("resumed_new"), f"ckpt_path={root / 'killed'}", check=True)
    run_cli("train.py", *args("killed"), f"ckpt_path={root / 'killed' / 'checkpoints' / 'last.ckpt'}", check=True)
    return kind, root


@pytest.mark.parametrize("resumed", ["resumed_new", "killed"])
def test_killed_and_resumed_run_equals_the_uninterrupted_run(runs, resumed):
    kind, root = runs
    full, res = root / "full", root / resumed
    assert final(res) == final(full)  # every final metric, the best score and epoch, the epoch count
    best_full, best_res = RunLayout(full).best_checkpoint(), RunLayout(res).best_checkpoint()
    # metrics.json names a file of THIS run, relative to it (the run may be moved or copied)
    assert json.loads((res / "metrics.json").read_text())["best_checkpoint"] == f"checkpoints/{best_res.name}"
    assert best_res.parent == res / "checkpoints" and best_res.name == best_full.name
    a, b = weights(best_full), weights(best_res)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = weights(full / "checkpoints" / "last.ckpt"), weights(res / "checkpoints" / "last.ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the metric history: the earlier epochs are kept (not deleted), the killed epoch's partial rows dropped
    assert (res / "csv" / "metrics.csv").read_text() == (full / "csv" / "metrics.csv").read_text()
    assert json.loads((res / "metrics.json").read_text())["resumed_from"]["epoch"] == 1


def test_last_checkpoint_is_the_last_epoch_and_the_best_is_kept(runs):
    kind, root = runs
    metrics = json.loads((root / "full" / "metrics.json").read_text())
    last = torch.load(root / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == EPOCHS - 1  # rewritten every epoch, not only when the monitor improves
    best = RunLayout(root / "full").best_checkpoint()
    assert torch.load(best, weights_only=True)["epoch"] == metrics["best_epoch"]
    assert sorted(p.name for p in (root / "full" / "checkpoints").iterdir()) == sorted(
        {"last.ckpt", Path(metrics["best_checkpoint"]).name}
    )
    assert not list((root / "full" / "checkpoints").glob(".*tmp*"))


def test_sigterm_stops_with_143_after_the_batch_and_resumes(tiny_stores, embeddings, tmp_path):
    args = overrides("mcc", tiny_stores, embeddings, tmp_path / "run")
    proc = run_cli(
        "train.py",
        *args,
        "+callbacks.kill._target_=killers.KillAt",
        "+callbacks.kill.epoch=2",
        "+callbacks.kill.batch=3",
        "+callbacks.kill.signal_name=SIGTERM",
    )
    assert proc.returncode == 143, proc.stderr[-3000:]  # not 0: a preempted job must not look finished
    assert (
        "SIGTERM: training stopped" in proc.stdout + proc.stderr
        and "holds the end of epoch 1" in proc.stdout + proc.stderr
    )
    assert not (tmp_path / "run" / "metrics.json").exists()
    run_cli("train.py", *args, "ckpt_path=last", check=True)  # a requeued job's own command resumes it
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["resumed_from"]["epoch"] == 1


def test_a_fresh_run_into_a_directory_holding_a_run_is_refused(runs, tiny_stores, embeddings):
    kind, root = runs
    before = (root / "full" / "metrics.json").read_text()
    proc = run_cli("train.py", *overrides(kind, tiny_stores, embeddings, root / "full"))
    assert proc.returncode != 0 and "already holds a training run" in proc.stderr and "ckpt_path=" in proc.stderr
    assert "Traceback" in proc.stderr  # HYDRA_FULL_ERROR: the message is the exception's
    assert (root / "full" / "metrics.json").read_text() == before
