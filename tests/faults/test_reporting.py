"""Class 8, results survive their own reporting: numbers are saved before figures and W&B, outputs go
where the documented variables say, and a full disk is a named error that leaves the old artefact intact.

The disk-full tests mount a small tmpfs, which needs root; elsewhere they are skipped with that reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import pytest
from conftest import ROOT, compose, evaluate_overrides, run_cli, train_overrides

from locsens.eval.pipeline import EvaluationError, evaluate
from locsens.files import ArtefactWriteError, write_bytes_atomic
from locsens.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def evaluation_cfg(stores, out, *extra):
    return compose("evaluate", evaluate_overrides(stores, out, "methods.country_frequency=null", *extra))


def test_figures_failing_after_the_numbers_keeps_the_numbers(tiny_stores, tmp_path):
    clean = evaluate(evaluation_cfg(tiny_stores, tmp_path / "clean"))
    out = tmp_path / "broken"
    out.mkdir()
    (out / "figures").write_text("a file where the figures folder should be")  # makes every figure fail
    with pytest.raises(
        EvaluationError, match=r"the numbers are saved .*results.json.*figures or logging to W&B failed"
    ):
        evaluate(evaluation_cfg(tiny_stores, out))
    saved = json.loads((out / "results.json").read_text())
    assert (
        saved["tagging"] == clean["tagging"]
        and saved["location_sensitive_retrieval"] == clean["location_sensitive_retrieval"]
    )
    assert "town_frequency" in (out / "tables.md").read_text()
    with h5py.File(out / "predictions.h5") as f:
        assert "town_frequency" in f["tagging"]


def test_evaluate_writes_where_LOCSENS_LOG_DIR_says(tiny_stores, tmp_path):
    outputs = ROOT / "outputs"
    before = set(outputs.rglob("results.json")) if outputs.exists() else set()
    run_cli(
        "evaluate.py",
        f"dataset_path={tiny_stores['dataset']}",
        "methods.mlc=null",
        "methods.mcc=null",
        "methods.her=null",
        "methods.mcc_x_town_prior=null",
        "retrieval.max_queries=20",
        "retrieval.min_query_images=3",
        env={"LOCSENS_LOG_DIR": str(tmp_path / "logs")},
        check=True,
    )
    assert len(list((tmp_path / "logs" / "eval").glob("*/results.json"))) == 1
    assert (set(outputs.rglob("results.json")) if outputs.exists() else set()) == before


# ---- a full disk -------------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only): what a full disk looks like to the writers."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("mount -t tmpfs is not permitted here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave: int) -> None:
    """Fill ``disk`` so that about ``leave`` bytes stay free."""
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def test_a_full_disk_keeps_the_old_file_and_names_the_path(small_disk):
    old = write_bytes_atomic(small_disk / "results.json", b'{"old": true}')
    fill(small_disk, 16 << 10)
    with pytest.raises(
        ArtefactWriteError,
        match=rf"{old}: could not be written \(no space left on device\); any previous results.json is intact",
    ):
        write_bytes_atomic(old, b"x" * (64 << 10))
    assert old.read_bytes() == b'{"old": true}' and not list(small_disk.glob(".*tmp*"))


def test_an_hdf5_store_on_a_full_disk_is_a_named_error_not_a_crash(small_disk, tiny_stores):
    """Through HDF5's own write path (feature blocks, no size known up front) in a fresh process: exit 1, not 139."""
    target = small_disk / "features.h5"
    shutil.copy(tiny_stores["features"], target)
    before = target.read_bytes()
    fill(small_disk, 64 << 10)
    script = textwrap.dedent(f"""
        import numpy as np
        from locsens.data.store import write_feature_store
        blocks = (np.ones((4096, 64), np.float32) for _ in range(8))
        write_feature_store({str(target)!r}, photo_id=np.arange(8 * 4096), features=blocks, extractor="x", overwrite=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"ArtefactWriteError: [Errno 28] {target}: could not be written (no space left on device)" in proc.stderr
    assert target.read_bytes() == before and not list(small_disk.glob(".*tmp*"))


def test_a_checkpoint_on_a_full_disk_is_named_and_training_fails(small_disk, tiny_stores):
    run = small_disk / "run"
    fill(small_disk, 48 << 10)  # room for the config and the CSV, not for a checkpoint
    cfg = compose("train", train_overrides(tiny_stores, run, "experiment=mcc", "trainer=debug", "logger=none"))
    with pytest.raises(
        ArtefactWriteError, match=r"checkpoints/(epoch000|last)\.ckpt: could not be written \(no space left on device\)"
    ):
        train(cfg)
    assert not (run / "metrics.json").exists() and not list((run / "checkpoints").glob("*.ckpt"))


def test_an_evaluation_on_a_full_disk_keeps_the_earlier_numbers(small_disk, tiny_stores):
    out = small_disk / "eval"
    evaluate(evaluation_cfg(tiny_stores, out))
    before = (out / "results.json").read_text()
    fill(small_disk, 8 << 10)
    with pytest.raises(ArtefactWriteError, match=r"predictions.h5: .*no space left on device"):
        evaluate(evaluation_cfg(tiny_stores, out, "overwrite=true"))
    assert (out / "results.json").read_text() == before
