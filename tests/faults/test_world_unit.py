"""Class 3, a world directory changes as one unit: a killed or failed prepare never leaves a pair that a
rerun takes for finished, a reused pair is verified, bad inputs are named before any parsing."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, compose

from locsens.data.ingest import IngestError
from locsens.data.store import DatasetStore, FeatureStore, StoreError, read_identity
from locsens.files import InUseError, exclusive
from locsens.prepare import PrepareError, prepare

WORLD = ["source.size=tiny", "source.n_photos=800"]


def prepare_cfg(data_dir, world="w", *extra):
    return compose("prepare", [f"paths.data_dir={data_dir}", f"world={world}", *WORLD, *extra])


def usable(world_dir) -> bool:
    ds, fs = DatasetStore(world_dir / "dataset.h5"), FeatureStore(world_dir / "features.h5")
    return bool((fs.rows_for(ds.photo_id) >= 0).all())


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    prepare(prepare_cfg(root, "w"))
    prepare(prepare_cfg(root, "other", "seed=1"))
    return root


def test_killed_rebuild_leaves_the_previous_world_usable(worlds, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(worlds / "w", data / "w")
    before = read_identity(data / "w" / "dataset.h5")[0]
    cmd = [sys.executable, "prepare.py", f"paths.data_dir={data}", "world=w", *WORLD, "seed=3", "overwrite=true"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((data / "w").glob(".build.tmp-*/features.h5")):  # the new world generated, ingestion under way
        assert proc.poll() is None and time.time() < deadline, (
            proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"
        )
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert usable(data / "w") and read_identity(data / "w" / "dataset.h5")[0] == before  # the old pair, intact
    summary = prepare(prepare_cfg(data, "w"))  # the plain rerun reuses it after checking it, and cleans up
    assert summary["images without features"] == 0
    assert not list((data / "w").glob(".*.tmp-*"))


def test_a_pair_broken_between_its_renames_is_refused_then_rebuilt(worlds, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(worlds / "w", data / "w")
    shutil.copy(worlds / "other" / "features.h5", data / "w" / "features.h5")  # what a kill between the renames leaves
    with pytest.raises(PrepareError, match=r"was built with feature store .* but features.h5 is .*overwrite=true"):
        prepare(prepare_cfg(data, "w"))
    prepare(prepare_cfg(data, "w", "overwrite=true"))
    assert usable(data / "w")
    assert read_identity(data / "w" / "dataset.h5")[1]["features"]["id"] == read_identity(data / "w" / "features.h5")[0]


@pytest.mark.parametrize(
    "change,named",
    [
        ("ingest.vocab_size=50", r"ingest config differs in vocab_size \(10000 -> 50\)"),
        ("seed=7", r"made from source .*'seed': 0.*'seed': 7"),
        ("ingest.split.test=0.2", r"ingest config differs in split"),
    ],
)
def test_reuse_checks_the_request(worlds, change, named):
    with pytest.raises(PrepareError, match=named):
        prepare(prepare_cfg(worlds, "w", change))


def test_a_world_made_by_another_generator_is_refused(worlds, monkeypatch):
    """The world's parameters and version are part of its source: a world.py with other defaults (or a
    newer version) does not silently reuse a world the old one wrote."""
    import locsens.data.world as world

    monkeypatch.setattr(world, "generator_identity", lambda params=None: "simulated-world-v0:000000000000")
    with pytest.raises(PrepareError, match=r"made from source .*'generator': 'simulated-world-v3:.*v0:000000000000"):
        prepare(prepare_cfg(worlds, "w"))


def test_a_changed_input_file_is_refused(worlds, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(worlds / "w", data / "w")
    with open(data / "w" / "yfcc100m_dataset.tsv", "ab") as fh:
        fh.write(b"\n")
    with pytest.raises(PrepareError, match=r"input .*yfcc100m_dataset.tsv changed since"):
        prepare(prepare_cfg(data, "w"))


def test_a_failed_prepare_never_blocks_its_rerun(tmp_path):
    junk = tmp_path / "words.txt"
    junk.write_text("zzzz\nqqqq\n")
    with pytest.raises(IngestError, match="vocabulary is empty"):
        prepare(prepare_cfg(tmp_path, "w", f"ingest.wordlist={junk}"))
    assert not (tmp_path / "w" / "dataset.h5").exists() and not (tmp_path / "w" / "features.h5").exists()
    prepare(prepare_cfg(tmp_path, "w"))  # the same command without the bad word list: no "exists, pass overwrite"
    assert usable(tmp_path / "w")


def test_temp_files_of_dead_runs_are_removed(worlds, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(worlds / "w", data / "w")
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (data / "w" / f".dataset.h5.tmp-{dead}").write_bytes(b"partial")
    (data / "w" / f".build.tmp-{dead}").mkdir()
    (data / "w" / f".build.tmp-{dead}" / "features.h5").write_bytes(b"partial")
    prepare(prepare_cfg(data, "w"))
    assert not list((data / "w").glob(".*.tmp-*"))


def test_a_concurrent_prepare_is_refused(worlds):
    with exclusive(worlds / "w", "prepare"):
        with pytest.raises(InUseError, match=r"prepare is already running there \(pid \d+\)"):
            prepare(prepare_cfg(worlds, "w"))


def test_wrong_feature_store_is_named_before_parsing(worlds, tmp_path):
    tsv = worlds / "w" / "yfcc100m_dataset.tsv"
    yfcc = lambda features, *extra: compose(
        "prepare",
        [
            f"paths.data_dir={tmp_path}",
            "world=real",
            "source=yfcc",  # noqa: E731
            f"source.tsv=[{tsv}]",
            f"source.features={features}",
            *extra,
        ],
    )
    t0 = time.perf_counter()
    with pytest.raises(
        PrepareError, match=r"none of the first [\d,]+ kept photo ids .* has valid features in .*other/features.h5"
    ):
        prepare(yfcc(worlds / "other" / "features.h5"))
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "real" / "dataset.h5").exists()
    with pytest.raises(StoreError, match="no such store"):
        prepare(yfcc(tmp_path / "missing.h5"))
    summary = prepare(yfcc(worlds / "w" / "features.h5"))  # the right store: built, linked
    assert summary["images without features"] == 0 and (tmp_path / "real" / "features.h5").is_symlink()
    same = shutil.copy(worlds / "w" / "features.h5", tmp_path / "same_features.h5")  # the same store at another path
    with pytest.raises(PrepareError, match=r"made from source .*'features': '.*w/features.h5'.*same_features.h5"):
        prepare(yfcc(same))
    ds = DatasetStore(tmp_path / "real" / "dataset.h5")
    assert np.array_equal(np.sort(ds.photo_id), np.sort(DatasetStore(worlds / "w" / "dataset.h5").photo_id))
