"""Dataset store: round trip, validation errors that name the file and the mismatch, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import reseal

from locsens.data.store import SCHEMA_VERSION, DatasetStore, StoreError, atomic_h5, write_dataset_store


def small_dataset(n: int = 7, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 4, n)
    return dict(
        photo_id=np.arange(100, 100 + n, dtype=np.int64),
        user_index=rng.integers(0, 3, n),
        users=["1@N00", "2@N00", "3@N00"],
        lat=rng.uniform(-90, 90, n),
        lon=rng.uniform(-180, 180, n),
        tags_indptr=np.concatenate([[0], np.cumsum(lengths)]),
        tags_indices=rng.integers(0, 5, int(lengths.sum())),
        places={
            "town": ["Paris", "Lyon"],
            "region": ["Ile-de-France", "Auvergne-Rhone-Alpes"],
            "country": ["France"],
            "continent": ["Europe"],
        },
        place_index={
            "town": rng.integers(0, 2, n),
            "region": rng.integers(0, 2, n),
            "country": np.zeros(n),
            "continent": np.zeros(n),
        },
        place_names=["auvergne-rhone-alpes", "europe", "france", "ile-de-france", "lyon", "paris"],
        split=rng.integers(0, 3, n),
        vocab=["beach", "été", "cat", "sea", "dog"],
        vocab_count=np.array([9, 7, 5, 3, 2]),
        source="unit test",
        ingest_config={"seed": seed},
        n_dropped={"video": 2, "untagged": 5},
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip(tmp_path):
    data = small_dataset()
    path = write_dataset_store(tmp_path / "d.h5", **data)
    s = DatasetStore(path)
    assert len(s) == 7 and s.num_tags == 5
    for key in ("photo_id", "user_index", "lat", "lon", "tags_indptr", "tags_indices", "split", "vocab_count"):
        np.testing.assert_array_equal(getattr(s, key), np.asarray(data[key]), err_msg=key)
    assert s.users == data["users"] and s.vocab == data["vocab"] and s.place_names == data["place_names"]
    assert s.places == data["places"]
    for level, idx in data["place_index"].items():
        np.testing.assert_array_equal(s.place_index[level], idx)
    assert json.loads(s.attrs["n_dropped"]) == {"video": 2, "untagged": 5}
    assert json.loads(s.attrs["ingest_config"]) == {"seed": 0}
    row = 3
    np.testing.assert_array_equal(
        s.tags_of(row), data["tags_indices"][data["tags_indptr"][row] : data["tags_indptr"][row + 1]]
    )
    assert sorted(np.concatenate([s.split_rows(x) for x in ("train", "val", "test")]).tolist()) == list(range(7))


def _corrupt(path: Path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def _replace(name, values):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=values)

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda f: f.attrs.__setitem__("schema", "locsens.features"),
            "attribute 'schema' is 'locsens.features', expected 'locsens.dataset'",
        ),
        (lambda f: f.attrs.__setitem__("schema_version", SCHEMA_VERSION + 1), f"schema_version {SCHEMA_VERSION + 1}"),
        (_replace("tags_indptr", np.array([0, 1, 3, 2, 4, 5, 6, 99])), "tags_indptr is not a valid CSR pointer"),
        (_replace("tags_indices", np.array([0, 1, 2, 3, 9] + [0] * 20)[:14]), "outside the vocabulary"),
        (_replace("lat", np.array([0.0, 95.0, 0, 0, 0, 0, 0])), "lat/lon outside"),
        (_replace("lon", np.zeros(6)), "dataset 'lon' has shape (6,)"),
        (_replace("split", np.array([0, 1, 2, 3, 0, 0, 0], dtype=np.int8)), "split values outside"),
        (lambda f: f.__delitem__("vocab_count"), "missing dataset 'vocab_count'"),
    ],
)
def test_validation_names_file_and_mismatch(tmp_path, edit, message):
    data = small_dataset()
    if "vocabulary" in message:  # needs an indptr whose total matches the 14 entries below
        data["tags_indptr"] = np.array([0, 2, 4, 6, 8, 10, 12, 14])
        data["tags_indices"] = np.zeros(14, dtype=np.int64)
    path = write_dataset_store(tmp_path / "d.h5", **data)
    _corrupt(path, edit)
    with pytest.raises(StoreError) as e:
        DatasetStore(path)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match="junk.h5: not a readable HDF5 file"):
        DatasetStore(junk)
    with pytest.raises(StoreError, match="missing.h5: no such store"):
        DatasetStore(tmp_path / "missing.h5")


def test_existing_store_refused_without_overwrite(tmp_path):
    path = write_dataset_store(tmp_path / "d.h5", **small_dataset(seed=0))
    before = sha256(path)
    with pytest.raises(FileExistsError, match="d.h5 already exists"):
        write_dataset_store(path, **small_dataset(seed=1))
    assert sha256(path) == before
    write_dataset_store(path, **small_dataset(seed=1), overwrite=True)
    assert sha256(path) != before
    np.testing.assert_array_equal(DatasetStore(path).lat, small_dataset(seed=1)["lat"])


def test_exception_midway_keeps_old_store(tmp_path):
    path = write_dataset_store(tmp_path / "d.h5", **small_dataset(seed=0))
    before = sha256(path)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_h5(path, "locsens.dataset", overwrite=True) as f:
            f.create_dataset("photo_id", data=np.arange(3))
            raise RuntimeError("boom")
    assert sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]  # the temporary file is gone
    DatasetStore(path)


def test_killed_build_keeps_old_store(tmp_path):
    path = write_dataset_store(tmp_path / "d.h5", **small_dataset(seed=0))
    before = sha256(path)
    script = textwrap.dedent(
        f"""
        import time, numpy as np
        from locsens.data.store import atomic_h5
        with atomic_h5({str(path)!r}, "locsens.dataset", overwrite=True) as f:
            f.create_dataset("photo_id", data=np.arange(1000))
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sha256(path) == before
    assert len(DatasetStore(path)) == 7
    leftovers = [p for p in tmp_path.iterdir() if p.name != "d.h5"]
    assert all(p.name.startswith(".d.h5.tmp-") for p in leftovers)  # at most a hidden temp (stores are built in memory)


def test_feature_reads_through_the_memory_map_equal_hdf5_reads(tmp_path):
    """A written feature store is contiguous and read through a memory map; a chunked store (the earlier
    layout) is read through HDF5; both give the rows asked for, in order, with repeats; NaN is refused."""
    from locsens.data.store import FeatureStore, write_feature_store

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((300, 12)).astype(np.float32)
    path = write_feature_store(tmp_path / "f.h5", photo_id=np.arange(300), features=feats, extractor="t")
    chunked = tmp_path / "chunked.h5"
    chunked.write_bytes(path.read_bytes())
    with h5py.File(chunked, "r+") as f:
        del f["features"]
        f.create_dataset("features", data=feats, chunks=(64, 12))
    rows = np.array([299, 3, 3, 150, 0, 17, 299])
    mapped, hdf5 = FeatureStore(path), FeatureStore(chunked)
    assert np.array_equal(mapped.read(rows), feats[rows]) and np.array_equal(hdf5.read(rows), feats[rows])
    assert mapped._map is not None and hdf5._map is None
    mapped.close()
    with h5py.File(path, "r+") as f:
        f["features"][5, 2] = np.nan
    with pytest.raises(StoreError, match=r"modified after it was written"):
        FeatureStore(path)
    reseal(path)  # as a store too large to re-hash: each read still refuses non-finite rows
    with pytest.raises(StoreError, match=r"NaN or inf.*photo ids \[5\]"):
        FeatureStore(path).read(np.array([4, 5]))
