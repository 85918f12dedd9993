"""The YFCC100M parser on real lines (the 1k sample) and on a hand-written fixture of every bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import read_yfcc

from locsens.data.tags import normalise_tags
from locsens.data.yfcc import DROP_REASONS, KEPT, MALFORMED_REASONS, YfccFormatError, YfccReader

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "yfcc100m_dataset_1k.tsv"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bad_lines.tsv"

# tests/fixtures/bad_lines.tsv, line by line (1-based): the bucket each line must land in
FIXTURE_LINES = {
    1: KEPT,  # Paris; tags include %C3%A9t%C3%A9 and route66 (dropped: digits)
    2: "wrong_column_count",  # 24 columns
    3: "wrong_column_count",  # 26 columns
    4: "wrong_column_count",  # blank line
    5: "bad_encoding",  # byte 0xff in the title
    6: "bad_photo_id",  # "12ab"
    7: "bad_photo_id",  # 20 digits: beyond int64
    8: "bad_marker",  # marker "2"
    9: "bad_longitude",  # "east"
    10: "bad_latitude",  # "north"
    11: "bad_latitude",  # empty while longitude is set
    12: "bad_longitude",  # "inf"
    13: "video",
    14: "untagged",
    15: "not_geotagged",
    16: "out_of_range",  # lat 95
    17: "out_of_range",  # lon -181.5
    18: "null_island",  # (0, 0)
    19: KEPT,  # Sydney, CRLF line ending
    20: KEPT,  # raw UTF-8 title and tag, no newline at the end of the file
}


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.exists():
        pytest.skip(f"real YFCC100M sample not present at {SAMPLE}")
    return SAMPLE


def test_sample_counts_match_its_readme(sample):
    photos, stats = read_yfcc(sample)
    assert stats.lines == 1000
    # the README's facts: 590 lines with user tags, 141 geotagged, 111 both, 3 videos
    assert (stats.tagged, stats.geotagged, stats.tagged_and_geotagged, stats.videos) == (590, 141, 111, 3)
    # exclusive buckets: videos first, then untagged, then not geotagged
    assert stats.reasons["video"] == 3
    assert sum(stats.reasons[r] for r in MALFORMED_REASONS) == 0
    assert sum(stats.reasons.values()) == 1000
    assert stats.kept == len(photos)
    # no video in the sample is both tagged and geotagged, and none is out of range / (0, 0)
    assert stats.kept + stats.reasons["out_of_range"] + stats.reasons["null_island"] == 111


def test_sample_rows_match_an_independent_csv_read(sample):
    """Cross-check every kept photo against the csv module's reading of the same file."""
    photos, _ = read_yfcc(sample)
    want = []
    with open(sample, encoding="utf-8", newline="") as fh:
        for cols in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if cols[24] == "0" and cols[10] and cols[12]:
                lon, lat = float(cols[12]), float(cols[13])
                if abs(lat) <= 90 and abs(lon) <= 180 and (lat, lon) != (0.0, 0.0):
                    want.append((int(cols[1]), cols[3], lon, lat, normalise_tags(cols[10])))
    assert [tuple(p) for p in photos] == want
    assert photos[0].tags == ["canon", "carnivalescatay", "cruise", "elph", "keywestflorida", "powershot"]


def test_fixture_counts_every_reason():
    photos, stats = read_yfcc(FIXTURE)
    want = {}
    for reason in FIXTURE_LINES.values():
        want[reason] = want.get(reason, 0) + 1
    assert stats.lines == len(FIXTURE_LINES)
    assert dict(stats.reasons) == want
    # the fixture covers every reason the parser knows
    assert set(want) == {KEPT, *MALFORMED_REASONS, *DROP_REASONS}
    assert [p.photo_id for p in photos] == [1001, 1018, 1019]
    assert photos[0].tags == ["paris", "eiffeltower", "été"]
    assert photos[2].tags == ["café", "beach"] and photos[2].user == "999@N01"
    assert (photos[1].lat, photos[1].lon) == (-33.8568, 151.2153)


def test_each_fixture_line_alone_lands_in_its_bucket(tmp_path):
    raw = FIXTURE.read_bytes().split(b"\n")
    for lineno, reason in FIXTURE_LINES.items():
        one = tmp_path / f"line{lineno}.tsv"
        one.write_bytes(raw[lineno - 1] + b"\n")
        _, stats = read_yfcc(one)
        assert dict(stats.reasons) == {reason: 1}, f"fixture line {lineno}"


@pytest.mark.parametrize(
    "lineno, field",
    [
        (2, "expected 25 tab-separated columns, got 24"),
        (4, "got 1"),
        (5, "'title' (column 8)"),
        (6, "'photo_id' (column 1)"),
        (8, "'marker' (column 24)"),
        (9, "'longitude' (column 12)"),
        (10, "'latitude' (column 13)"),
        (12, "'longitude' (column 12)"),
    ],
)
def test_strict_names_file_line_and_field(tmp_path, lineno, field):
    raw = FIXTURE.read_bytes().split(b"\n")
    path = tmp_path / "strict.tsv"
    good = raw[0]
    path.write_bytes(b"\n".join([good, good, raw[lineno - 1], good]) + b"\n")
    reader = YfccReader(path, strict=True)
    with pytest.raises(YfccFormatError) as e:
        list(reader)
    msg = str(e.value)
    assert str(path) in msg and "line 3:" in msg and field in msg, msg


def test_strict_passes_a_clean_file(sample):
    photos, stats = read_yfcc(sample, strict=True)
    assert stats.kept == len(photos) == 111


def test_wordlist_restricts_tags():
    photos, _ = read_yfcc(FIXTURE, wordlist={"paris", "beach"})
    assert [p.tags for p in photos] == [["paris"], [], ["beach"]]


def test_crlf_file_parses_as_lf(tmp_path):
    lf = FIXTURE.read_bytes().replace(b"\r\n", b"\n")
    crlf = tmp_path / "crlf.tsv"
    crlf.write_bytes(lf.replace(b"\n", b"\r\n"))
    unix = tmp_path / "lf.tsv"
    unix.write_bytes(lf)
    photos, stats = read_yfcc(crlf)
    assert (photos, stats) == read_yfcc(unix)
    assert YfccReader(crlf).compression == "plain"


@pytest.mark.parametrize("strict", [False, True])
def test_file_level_problems_raise_in_either_mode(tmp_path, strict):
    line = FIXTURE.read_bytes().split(b"\n")[0]
    old_mac = tmp_path / "old_mac.tsv"
    old_mac.write_bytes((line + b"\r") * 3)
    with pytest.raises(YfccFormatError, match=r"old_mac\.tsv: uses CR-only line endings \(old Mac\).*convert with: tr"):
        list(YfccReader(old_mac, strict=strict))
    one_line = tmp_path / "one_line.tsv"  # a wrong file: 2 MiB without a line break
    one_line.write_bytes(b"x" * (2 << 20))
    reader = YfccReader(one_line, strict=strict)
    with pytest.raises(YfccFormatError, match=r"one_line\.tsv: no line break in its first 1,048,576 bytes"):
        list(reader)
    assert reader.stats.lines == 0  # refused before reading the giant "line"


def test_a_huge_malformed_line_is_named(tmp_path):
    line = FIXTURE.read_bytes().split(b"\n")[0]
    path = tmp_path / "huge.tsv"
    path.write_bytes(line + b"\n" + b"y" * (2 << 20) + b"\n" + line + b"\n")
    with pytest.raises(YfccFormatError, match=r"line 2: .*got 1 in a line of 2,097,153 bytes"):
        list(YfccReader(path, strict=True))
    _, stats = read_yfcc(path)
    assert dict(stats.reasons) == {KEPT: 2, "wrong_column_count": 1}
