"""Ingestion end to end on small generated YFCC100M-format files: vocabulary, filters, splits, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import yfcc_line

from locsens.data.ingest import assign_splits, ingest, main, select_vocabulary
from locsens.data.store import SPLIT_IDS, DatasetStore
from locsens.data.yfcc import YfccFormatError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bad_lines.tsv"
CITIES = [(48.8566, 2.3522), (-33.8688, 151.2093), (40.7128, -74.0060), (35.6762, 139.6503), (-22.9068, -43.1729)]


def write_tsv(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for n, (pid, user, tags, lat, lon) in enumerate(rows):
            fh.write(yfcc_line(n, pid, user, tags, lat, lon))
    return path


def random_rows(n: int, seed: int = 0, n_users: int = 40) -> list[tuple]:
    rng = np.random.default_rng(seed)
    words = ["beach", "sea", "cat", "dog", "temple", "snow", "bridge", "tomato", "Sunset", "new york", "city2010"]
    rows = []
    for i in range(n):
        lat, lon = CITIES[rng.integers(len(CITIES))]
        tags = [words[j] for j in rng.integers(0, len(words) - 1, rng.integers(1, 6))]
        if rng.random() < 0.2:
            tags.append(words[-1])  # has digits: never a vocabulary tag
        rows.append(
            (10_000 + i, f"{rng.integers(n_users)}@N00", tags, lat + rng.normal(0, 0.05), lon + rng.normal(0, 0.05))
        )
    return rows


@pytest.fixture(scope="module")
def vocab_tsv(tmp_path_factory) -> Path:
    """Known counts: top 8, alpha 5, beta 5 (tie: alphabetical), gamma 3, delta 1."""
    paris = (48.8566, 2.3522)
    rows = [
        (1, "u1@N00", ["top", "top", "beta", "alpha"], *paris),
        (2, "u1@N00", ["top", "beta", "Beta", "gamma"], *paris),  # "Beta" normalises to beta
        (3, "u2@N00", ["top", "alpha", "alpha", "beta"], *paris),
        (4, "u2@N00", ["top", "alpha", "gamma", "gamma"], *paris),
        (5, "u3@N00", ["top", "alpha", "beta"], *paris),
        (6, "u3@N00", ["top", "delta"], *paris),  # only out-of-vocabulary tags with vocab_size=3
        (7, "u4@N00", ["top", "route66"], *paris),  # digits: no tag left at all
    ]
    return write_tsv(tmp_path_factory.mktemp("vocab") / "v.tsv", rows)


def read_arrays(path: Path) -> dict[str, bytes]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()].tobytes() if obj.dtype.kind != "O" else repr(obj[()].tolist()).encode())
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return out


def test_vocabulary_order_and_drop_top(vocab_tsv, tmp_path):
    r = ingest(
        vocab_tsv,
        tmp_path / "s.h5",
        drop_top=1,
        vocab_size=3,
        max_tags=15,
        split={"test": 0, "val": 0},
        print_report=False,
    )
    s = DatasetStore(r.out_path)
    assert s.vocab == ["alpha", "beta", "gamma"]  # top dropped; alpha/beta tie broken alphabetically
    assert s.vocab_count.tolist() == [5, 5, 3]
    # duplicates kept in the photo's order; out-of-vocabulary tags removed
    assert [s.vocab[i] for i in s.tags_of(0)] == ["beta", "alpha"]
    assert [s.vocab[i] for i in s.tags_of(1)] == ["beta", "beta", "gamma"]
    assert [s.vocab[i] for i in s.tags_of(2)] == ["alpha", "alpha", "beta"]
    assert s.photo_id.tolist() == [1, 2, 3, 4, 5]
    assert r.reasons["too_few_vocab_tags"] == 2  # photos 6 (delta only) and 7 (no tag survives)
    assert json.loads(s.attrs["n_dropped"]) == r.reasons
    assert s.places["town"] == ["Paris"] and {"paris", "france", "europe", "ile-de-france"} <= set(s.place_names)

    r0 = ingest(
        vocab_tsv, tmp_path / "s0.h5", drop_top=0, vocab_size=2, split={"test": 0, "val": 0}, print_report=False
    )
    assert DatasetStore(r0.out_path).vocab == ["top", "alpha"]


def test_min_max_tags_and_dedupe(vocab_tsv, tmp_path):
    r = ingest(
        vocab_tsv,
        tmp_path / "s.h5",
        drop_top=1,
        vocab_size=3,
        min_tags=3,
        max_tags=3,
        split={"test": 0, "val": 0},
        print_report=False,
    )
    s = DatasetStore(r.out_path)
    assert s.photo_id.tolist() == [2, 3, 4]  # exactly three vocabulary tags (duplicates count)
    assert (r.reasons["too_few_vocab_tags"], r.reasons["too_many_vocab_tags"]) == (4, 0)
    r = ingest(
        vocab_tsv,
        tmp_path / "m.h5",
        drop_top=1,
        vocab_size=3,
        min_tags=1,
        max_tags=2,
        split={"test": 0, "val": 0},
        print_report=False,
    )
    assert DatasetStore(r.out_path).photo_id.tolist() == [1, 5]
    assert r.reasons["too_many_vocab_tags"] == 3
    r = ingest(
        vocab_tsv,
        tmp_path / "d.h5",
        drop_top=1,
        vocab_size=3,
        dedupe_tags=True,
        split={"test": 0, "val": 0},
        print_report=False,
    )
    s = DatasetStore(r.out_path)
    assert s.vocab_count.tolist() == [4, 4, 2]  # alpha 4, beta 4, gamma 2 when each photo counts a tag once
    assert [s.vocab[i] for i in s.tags_of(1)] == ["beta", "gamma"]


def test_every_line_accounted_for(tmp_path):
    r = ingest(FIXTURE, tmp_path / "f.h5", drop_top=0, vocab_size=100, split={"test": 0, "val": 0}, print_report=False)
    assert r.lines == 20 and r.kept == 3
    assert r.kept + sum(r.reasons.values()) == r.lines
    for reason in (
        "wrong_column_count",
        "bad_encoding",
        "bad_photo_id",
        "bad_marker",
        "bad_longitude",
        "bad_latitude",
        "video",
        "untagged",
        "not_geotagged",
        "out_of_range",
        "null_island",
    ):
        assert r.reasons[reason] >= 1, reason
    table = r.table()
    assert "bad_encoding" in table and "null_island" in table and "total" in table
    with pytest.raises(YfccFormatError, match="bad_lines.tsv: line 2: line: expected 25"):
        ingest(FIXTURE, tmp_path / "strict.h5", strict=True, split={"test": 0, "val": 0}, print_report=False)
    assert not (tmp_path / "strict.h5").exists()


def test_duplicate_photo_ids_across_files(tmp_path):
    rows = random_rows(30)
    a = write_tsv(tmp_path / "a.tsv", rows)
    b = write_tsv(tmp_path / "b.tsv", rows[:10])
    r = ingest([a, b], tmp_path / "s.h5", drop_top=0, vocab_size=50, split={"test": 0, "val": 0}, print_report=False)
    assert r.kept == 30 and r.reasons["duplicate_photo_id"] == 10
    assert len(np.unique(DatasetStore(r.out_path).photo_id)) == 30


@pytest.fixture(scope="module")
def big_tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("big") / "big.tsv", random_rows(400))


def test_split_sizes_by_counts_and_fractions(big_tsv, tmp_path):
    r = ingest(big_tsv, tmp_path / "c.h5", drop_top=0, vocab_size=50, split={"test": 60, "val": 40}, print_report=False)
    assert r.kept == 400 and r.split_sizes == {"train": 300, "val": 40, "test": 60}
    s = DatasetStore(r.out_path)
    assert [len(s.split_rows(x)) for x in ("train", "val", "test")] == [300, 40, 60]
    r = ingest(
        big_tsv, tmp_path / "f.h5", drop_top=0, vocab_size=50, split={"test": 0.25, "val": 0.1}, print_report=False
    )
    assert r.split_sizes == {"train": 260, "val": 40, "test": 100}
    with pytest.raises(ValueError, match="only 400 photos were kept"):
        ingest(big_tsv, tmp_path / "x.h5", drop_top=0, vocab_size=50, print_report=False)  # the paper's 500k/250k


def test_split_by_user_keeps_users_whole(big_tsv, tmp_path):
    r = ingest(
        big_tsv,
        tmp_path / "u.h5",
        drop_top=0,
        vocab_size=50,
        split={"test": 80, "val": 60, "by": "user"},
        print_report=False,
    )
    s = DatasetStore(r.out_path)
    splits_of_user = {}
    for u, sp in zip(s.user_index.tolist(), s.split.tolist()):
        splits_of_user.setdefault(u, set()).add(sp)
    assert all(len(v) == 1 for v in splits_of_user.values())
    per_user = np.bincount(s.user_index)
    assert 80 <= r.split_sizes["test"] < 80 + per_user.max()
    assert 60 <= r.split_sizes["val"] < 60 + per_user.max()
    # a plain split of the same data does mix users (so the property above is not vacuous)
    mixed = assign_splits(len(s), s.user_index, {"test": 80, "val": 60}, seed=0)
    assert any(len(set(mixed[s.user_index == u].tolist())) > 1 for u in range(len(s.users)))


def test_split_by_cell_keeps_h3_cells_whole(tmp_path):
    """by=cell: every H3 cell's photos in one split; the sizes reached; a random split mixes cells."""
    import h3

    rng = np.random.default_rng(0)
    n = 3000
    lat, lon = rng.uniform(-50, 60, n), rng.uniform(-120, 140, n)
    users = rng.integers(0, 40, n)
    split = {"test": 300, "val": 200, "by": "cell", "cell_resolution": 1}
    ids = assign_splits(n, users, split, seed=3, lat=lat, lon=lon)
    cells = [h3.latlng_to_cell(a, b, 1) for a, b in zip(lat, lon)]
    split_of_cell = {}
    for c, sp in zip(cells, ids.tolist()):
        split_of_cell.setdefault(c, set()).add(sp)
    assert all(len(v) == 1 for v in split_of_cell.values())
    per_cell = max(cells.count(c) for c in set(cells))
    assert 300 <= (ids == 2).sum() < 300 + per_cell and 200 <= (ids == 1).sum() < 200 + per_cell
    mixed = assign_splits(n, users, {"test": 300, "val": 200}, seed=3)
    assert any(len({mixed[i] for i in range(n) if cells[i] == c}) > 1 for c in set(cells))
    with pytest.raises(ValueError, match="split.by='grid'"):
        assign_splits(n, users, {"test": 300, "by": "grid"}, seed=3, lat=lat, lon=lon)


def test_same_seed_same_bytes(big_tsv, tmp_path):
    kw = dict(drop_top=1, vocab_size=6, split={"test": 0.2, "val": 0.1, "by": "user"}, print_report=False)
    a = read_arrays(ingest(big_tsv, tmp_path / "a.h5", seed=7, **kw).out_path)
    b = read_arrays(ingest(big_tsv, tmp_path / "b.h5", seed=7, **kw).out_path)
    c = read_arrays(ingest(big_tsv, tmp_path / "c.h5", seed=8, **kw).out_path)
    assert a == b
    assert a["split"] != c["split"] and a["photo_id"] == c["photo_id"]


def test_select_vocabulary_ties_at_the_cut():
    counts = np.array([5, 3, 3, 3, 9, 1])
    names = ["e", "d", "b", "c", "a", "f"]
    ids = select_vocabulary(counts, names, drop_top=1, vocab_size=3)
    assert [names[i] for i in ids] == ["e", "b", "c"]  # a dropped; among the 3s, b and c win over d


def test_refuses_existing_output_before_parsing(big_tsv, tmp_path):
    out = tmp_path / "s.h5"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="s.h5 already exists"):
        ingest(big_tsv, out, print_report=False)
    assert out.read_bytes() == b"old"


def test_cli(big_tsv, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    assert (
        main(
            [
                str(big_tsv),
                "--out",
                str(out),
                "--vocab-size",
                "5",
                "--drop-top",
                "1",
                "--test",
                "0.1",
                "--val",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    s = DatasetStore(out)
    assert s.num_tags == 5 and 0 < len(s) < 400
    assert (s.split == SPLIT_IDS["test"]).sum() == round(0.1 * len(s)) and (s.split == SPLIT_IDS["val"]).sum() == 20
    printed = capsys.readouterr().out
    kept_line = next(line for line in printed.splitlines() if line.startswith("kept "))
    assert kept_line.split()[1] == f"{len(s):,}" and "too_few_vocab_tags" in printed
    with pytest.raises(FileExistsError):
        main([str(big_tsv), "--out", str(out)])
