"""Class 4, YFCC100M as it ships: bz2 and gz metadata (told apart by content, not name) prepare exactly the
store the plain file does; truncated archives and CR-only line endings are named, never an empty store.

End to end through ``prepare.py source=yfcc``; the parser-level cases are in tests/test_compressed_input.py."""

from __future__ import annotations

import bz2
import gzip

import numpy as np
import pytest
from conftest import compose, run_cli

from locsens.data.store import DatasetStore
from locsens.prepare import prepare

ARRAYS = ("photo_id", "user_index", "lat", "lon", "tags_indptr", "tags_indices", "split", "vocab_count")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed")
    prepare(compose("prepare", [f"paths.data_dir={root}", "world=w", "source.size=tiny", "source.n_photos=800"]))
    return root


def yfcc_args(world, data_dir, tsv) -> list[str]:
    return [
        f"paths.data_dir={data_dir}",
        "world=real",
        "source=yfcc",
        f"source.tsv=[{tsv}]",
        f"source.features={world / 'w' / 'features.h5'}",
    ]


def prepare_yfcc(world, data_dir, tsv):
    return run_cli("prepare.py", *yfcc_args(world, data_dir, tsv))


@pytest.fixture(scope="module")
def plain_store(world):
    prepare(compose("prepare", yfcc_args(world, world / "plain", world / "w" / "yfcc100m_dataset.tsv")))
    return DatasetStore(world / "plain" / "real" / "dataset.h5")


@pytest.mark.parametrize(
    "kind,name,cli",
    [
        ("bz2", "yfcc100m_dataset.bz2", True),
        ("gz", "yfcc100m_dataset.gz", False),
        ("bz2", "misnamed.tsv", False),
        ("gz", "misnamed.txt", False),
    ],
)
def test_compressed_metadata_prepares_the_plain_files_store(world, plain_store, tmp_path, kind, name, cli):
    plain = (world / "w" / "yfcc100m_dataset.tsv").read_bytes()
    packed = tmp_path / name
    packed.write_bytes(bz2.compress(plain, 9) if kind == "bz2" else gzip.compress(plain, 6))
    if cli:  # as a user types it, once
        proc = prepare_yfcc(world, tmp_path / "packed", packed)
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        prepare(compose("prepare", yfcc_args(world, tmp_path / "packed", packed)))
    a, b = plain_store, DatasetStore(tmp_path / "packed" / "real" / "dataset.h5")
    assert len(a) > 500
    for key in ARRAYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.vocab == b.vocab and a.content_id == b.content_id  # the same store, byte for byte in content
    assert b.made_from["inputs"][0]["compression"] == {"bz2": "bzip2", "gz": "gzip"}[kind]


@pytest.mark.parametrize("kind", ["bz2", "gz"])
def test_a_truncated_archive_is_named_and_leaves_no_store(world, tmp_path, kind):
    plain = (world / "w" / "yfcc100m_dataset.tsv").read_bytes()
    data = bz2.compress(plain, 9) if kind == "bz2" else gzip.compress(plain, 6)
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    proc = prepare_yfcc(world, tmp_path, cut)
    assert proc.returncode == 1 and f"{cut}" in proc.stderr and "truncated or corrupt" in proc.stderr
    assert not (tmp_path / "real" / "dataset.h5").exists()


def test_cr_only_line_endings_are_named(world, tmp_path):
    mac = tmp_path / "old_mac.tsv"
    mac.write_bytes((world / "w" / "yfcc100m_dataset.tsv").read_bytes().replace(b"\n", b"\r"))
    proc = prepare_yfcc(world, tmp_path, mac)
    assert proc.returncode == 1 and "old_mac.tsv" in proc.stderr and "CR-only line endings" in proc.stderr
    assert not (tmp_path / "real" / "dataset.h5").exists()
