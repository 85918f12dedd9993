"""YFCC100M inputs as they ship: bzip2 and gzip (told by magic bytes, not name) parse exactly as the plain file;
multi-stream files read completely; truncated ones fail naming the file; the Python fallback decodes the same."""

from __future__ import annotations

import bz2
import functools
import gzip
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_yfcc

from locsens.data import yfcc
from locsens.data.compressed import (
    BZIP2,
    GZIP,
    PLAIN,
    CorruptInputError,
    compressed_position,
    detect_compression,
    open_input,
)
from locsens.data.ingest import ingest
from locsens.data.store import DatasetStore
from locsens.data.yfcc import ParseStats, YfccFormatError, YfccReader

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "yfcc100m_dataset_1k.tsv"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bad_lines.tsv"
CITIES = [(48.8566, 2.3522), (-33.8688, 151.2093), (40.7128, -74.0060), (35.6762, 139.6503)]
WORDS = ["beach", "sea", "cat", "dog", "temple", "snow", "bridge", "sunset", "new+york", "city2010", "caf%C3%A9"]


@functools.cache
def generated_yfcc(n: int, seed: int = 0) -> bytes:
    """``n`` lines in the yfcc100m_dataset format: tagged and geotagged photos, with some untagged, ungeotagged
    and video lines, random hex so that compressed streams span several blocks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lat, lon = CITIES[i % len(CITIES)]
        lon, lat = lon + rng.normal(0, 0.1), lat + rng.normal(0, 0.1)
        geo = ("", "", "") if i % 7 == 3 else (f"{lon:.6f}", f"{lat:.6f}", "16")
        tags = "" if i % 11 == 5 else ",".join(WORDS[j] for j in rng.integers(0, len(WORDS), rng.integers(1, 6)))
        secret = f"{rng.integers(2**62):016x}"
        pid = 5_000_000 + i
        cols = [
            str(i),
            str(pid),
            secret * 2,
            f"{rng.integers(400)}@N0{i % 9}",
            "nick",
            "2012-02-16 09:56:37.0",
            "1331840483",
            "Canon",
            f"IMG_{i:05d}",
            "",
            tags,
            "",
            *geo,
            f"http://www.flickr.com/photos/x/{pid}/",
            f"http://farm8.staticflickr.com/1/{pid}_{secret[:10]}.jpg",
            "Attribution License",
            "http://creativecommons.org/licenses/by/2.0/",
            "1",
            "8",
            secret[:10],
            secret[6:],
            "jpg",
            "1" if i % 97 == 0 else "0",
        ]
        out.append("\t".join(cols) + "\n")
    return "".join(out).encode()


def parse(path: Path, **kwargs) -> tuple[list, ParseStats, str]:
    """(photos, stats, compression) of one file."""
    reader = YfccReader(path, **kwargs)
    photos = list(reader)
    return photos, reader.stats, reader.compression


@pytest.fixture(params=["parallel", "python"])
def decoder(request, monkeypatch, caplog):
    """Run a test with the parallel decoders, then again with them made unimportable (Python's bz2/gzip)."""
    if request.param == "python":
        monkeypatch.setitem(sys.modules, "indexed_bzip2", None)  # import raises ImportError
        monkeypatch.setitem(sys.modules, "rapidgzip", None)
    caplog.set_level(logging.WARNING, logger="locsens.data.compressed")
    return request.param


def source_lines(name: str) -> bytes:
    if name == "sample":
        if not SAMPLE.exists():
            pytest.skip(f"real YFCC100M sample not present at {SAMPLE}")
        return SAMPLE.read_bytes()
    if name == "fixture":  # every malformed and drop reason, a CRLF line and no newline at the end
        return FIXTURE.read_bytes()
    return generated_yfcc(1500)


@pytest.mark.parametrize("source", ["sample", "fixture", "generated"])
def test_every_encoding_parses_as_the_plain_file(tmp_path, source, decoder, caplog):
    data = source_lines(source)
    files = {
        "plain": (tmp_path / "plain.tsv", data, PLAIN),
        "bz2": (tmp_path / "in.tsv.bz2", bz2.compress(data, 9), BZIP2),
        "gz": (tmp_path / "in.tsv.gz", gzip.compress(data), GZIP),
        "bz2 named .tsv": (tmp_path / "looks_plain.tsv", bz2.compress(data, 1), BZIP2),
        "plain named .gz": (tmp_path / "looks_gzipped.tsv.gz", data, PLAIN),
        "gz named .bz2": (tmp_path / "looks_bzipped.bz2", gzip.compress(data, 1), GZIP),
    }
    for path, content, _ in files.values():
        path.write_bytes(content)
    want_photos, want_stats, _ = parse(files["plain"][0])
    assert want_stats.lines == data.count(b"\n") + (not data.endswith(b"\n")) and want_stats.kept > 0
    for name, (path, _, kind) in files.items():
        photos, stats, compression = parse(path)
        assert compression == kind, name
        assert stats == want_stats, name
        assert photos == want_photos, name
    fallback_notes = [r for r in caplog.records if "single-threaded" in r.getMessage()]
    assert bool(fallback_notes) == (decoder == "python")


def test_detect_compression_reads_magic_bytes_not_names(tmp_path):
    cases = {
        "a.bz2": (b"BZh91AY&SY", BZIP2),
        "a.gz": (b"\x1f\x8b\x08\x00", GZIP),
        "b.gz": (b"0\t123\t", PLAIN),
        "bz2_level_0.bz2": (b"BZh0", PLAIN),  # not a block size: bzip2's is 1-9
        "short": (b"BZ", PLAIN),
        "empty": (b"", PLAIN),
    }
    for name, (content, kind) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert detect_compression(tmp_path / name) == kind, name


def test_other_compression_is_named_not_parsed(tmp_path):
    path = tmp_path / "yfcc100m_dataset.tsv"
    path.write_bytes(b"\xfd7zXZ\x00\x00\x04" + bytes(100))
    with pytest.raises(ValueError, match=r"yfcc100m_dataset\.tsv: is xz-compressed"):
        list(YfccReader(path))


@pytest.mark.parametrize("kind", [BZIP2, GZIP])
def test_multi_stream_files_read_completely(tmp_path, kind, decoder):
    """pbzip2 / ``cat a.gz b.gz`` output: several complete streams, each of several blocks, back to back."""
    parts = [generated_yfcc(1500, seed) for seed in range(3)]
    compress = (lambda d: bz2.compress(d, 1)) if kind == BZIP2 else (lambda d: gzip.compress(d, 1))
    joined = tmp_path / "joined"
    joined.write_bytes(b"".join(compress(p) for p in parts))
    plain = tmp_path / "plain.tsv"
    plain.write_bytes(b"".join(parts))
    with open_input(joined) as fh:
        assert fh.read() == plain.read_bytes()
    photos, stats, compression = parse(joined)
    assert compression == kind
    assert (photos, stats) == parse(plain)[:2]
    assert stats.lines == 4500


def cut_points(size: int) -> list[int]:
    """Where to truncate: inside the header, 8 points through the data (rapidgzip alone reads most of these as a
    complete shorter file), and just before the end (the trailer)."""
    return [5, 12, *range(size // 9, size - 16, size // 9)[:8], size - 9, size - 4, size - 1]


@pytest.mark.parametrize("kind", [BZIP2, GZIP])
def test_truncated_file_raises_naming_it(tmp_path, kind, decoder):
    data = generated_yfcc(2500)
    whole = bz2.compress(data, 1) if kind == BZIP2 else gzip.compress(data, 1)
    path = tmp_path / "yfcc100m_dataset"
    for cut in cut_points(len(whole)):
        path.write_bytes(whole[:cut])
        with pytest.raises(CorruptInputError, match="truncated or corrupt") as e:
            with open_input(path) as fh:
                fh.read()
        assert str(path) in str(e.value) and kind in str(e.value), (cut, str(e.value))
    # through the reader, in either mode: an error after the lines before the damage (more than the 1 MiB
    # read buffer), not a short parse that looks complete
    data = generated_yfcc(8000)
    whole = bz2.compress(data, 1) if kind == BZIP2 else gzip.compress(data, 1)
    path.write_bytes(whole[: len(whole) // 2])
    for strict in (False, True):
        reader = YfccReader(path, strict=strict)
        with pytest.raises(CorruptInputError, match=str(path)):
            list(reader)
        assert 0 < reader.stats.lines < 8000


def test_corrupt_byte_is_caught(tmp_path, decoder):
    """bzip2 and gzip carry CRCs: one flipped bit in the middle fails the read."""
    data = generated_yfcc(2500)
    for kind, whole in ((BZIP2, bz2.compress(data, 1)), (GZIP, gzip.compress(data, 1))):
        damaged = bytearray(whole)
        damaged[len(damaged) // 2] ^= 0x10
        path = tmp_path / f"damaged_{kind}"
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptInputError, match=f"{path}: {kind} data is truncated or corrupt"):
            with open_input(path) as fh:
                fh.read()


@pytest.mark.parametrize("kind", [PLAIN, BZIP2, GZIP])
@pytest.mark.parametrize("strict", [False, True])
def test_cr_only_line_endings_are_named(tmp_path, kind, strict):
    data = generated_yfcc(50).replace(b"\n", b"\r")
    content = {PLAIN: data, BZIP2: bz2.compress(data), GZIP: gzip.compress(data)}[kind]
    path = tmp_path / "old_mac.tsv"
    path.write_bytes(content)
    with pytest.raises(YfccFormatError, match="uses CR-only line endings") as e:
        list(YfccReader(path, strict=strict))
    assert str(path) in str(e.value)
    convert = {PLAIN: "tr '\\r' '\\n' < old_mac.tsv", BZIP2: "bzcat old_mac.tsv | tr", GZIP: "zcat old_mac.tsv | tr"}[
        kind
    ]
    assert f"convert with: {convert}" in str(e.value), str(e.value)


def test_progress_follows_the_compressed_bytes(tmp_path, monkeypatch, decoder):
    data = generated_yfcc(5000)  # two 1 MiB reads
    path = tmp_path / "in.bz2"
    path.write_bytes(bz2.compress(data, 1))
    size = path.stat().st_size
    positions = []
    with open_input(path) as fh:
        for _line in fh:
            positions.append(compressed_position(fh))
    assert positions == sorted(positions) and 0 <= positions[0] and positions[-1] <= size
    assert positions[len(positions) // 2] > 0  # it moves while decoding, before the end
    # the reader's progress bar, updated every 256 lines here
    monkeypatch.setattr(yfcc, "PROGRESS_EVERY", 256)
    _, stats = read_yfcc(path, progress=True)
    assert stats.lines == 5000


@pytest.mark.parametrize("kind", [BZIP2, GZIP])
def test_ingest_of_a_compressed_file_equals_the_plain_one(tmp_path, kind):
    data = generated_yfcc(3000)
    plain = tmp_path / "plain.tsv"
    plain.write_bytes(data)
    packed = tmp_path / ("in.bz2" if kind == BZIP2 else "in.gz")
    packed.write_bytes(bz2.compress(data, 1) if kind == BZIP2 else gzip.compress(data, 1))
    options = dict(vocab_size=6, drop_top=0, split={"test": 0.1, "val": 0.1}, print_report=False)
    want_report = ingest(plain, tmp_path / "plain.h5", **options)
    got_report = ingest(packed, tmp_path / "packed.h5", **options)
    for field in ("lines", "kept", "reasons"):
        assert getattr(got_report, field) == getattr(want_report, field), field
    want, got = DatasetStore(want_report.out_path), DatasetStore(got_report.out_path)
    assert len(got) == want_report.kept > 1500
    for name in ("photo_id", "user_index", "lat", "lon", "tags_indptr", "tags_indices", "split", "vocab_count"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in ("users", "vocab", "place_names", "places"):
        assert getattr(got, name) == getattr(want, name), name
    for level, index in want.place_index.items():
        np.testing.assert_array_equal(got.place_index[level], index, err_msg=level)
