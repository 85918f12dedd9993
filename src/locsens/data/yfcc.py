"""Streaming parser of the real YFCC100M ``yfcc100m_dataset`` file (25 tab-separated columns).

It keeps what LocSens trains on -- photos (marker 0) with user tags and valid coordinates -- and
accounts for every other line: each line ends in exactly one bucket of ``ParseStats.reasons``
(``kept``, a drop reason or a malformed reason), so the buckets always sum to the lines read.

Malformed lines (counted and skipped; ``strict=True`` raises :class:`YfccFormatError` at the
first one, naming file, 1-based line number and field):

    wrong_column_count   not 25 tab-separated columns
    bad_encoding         not valid UTF-8 (the file is read in binary and decoded line by line), or a
                         kept photo's user or tag with control characters (a NUL) or a tag whose
                         percent-encoding is not UTF-8 (``caf%E9``)
    bad_photo_id         column 1 is not a non-negative int64
    bad_marker           column 24 is neither 0 (photo) nor 1 (video)
    bad_longitude        column 12 not a finite number (or empty while column 13 is set)
    bad_latitude         column 13 not a finite number (or empty while column 12 is set)

Drop reasons (well-formed lines LocSens does not use), checked in this order:

    video                marker 1
    untagged             empty user-tag column 10
    not_geotagged        empty longitude and latitude
    out_of_range         latitude outside [-90, 90] or longitude outside [-180, 180]
    null_island          exactly (0, 0), Flickr's placeholder for "no location"

Independently of those exclusive buckets, ``ParseStats`` counts facts over all well-formed lines
(``tagged``, ``geotagged``, ``tagged_and_geotagged``, ``videos``): the numbers the sample's
README states.

The input may be plain, bzip2 (as YFCC100M ships it) or gzip, told apart by its magic bytes and decoded
in parallel threads while the parser runs (:mod:`locsens.data.compressed`); ``YfccReader.compression``
says which. File-level problems raise :class:`YfccFormatError` whether or not ``strict``: CR-only line
endings (old Mac: the whole file would be one line) and no line break at all in the first MiB; a
truncated or corrupt compressed file raises ``locsens.data.compressed.CorruptInputError`` when the
damage is reached. CRLF line endings and a missing newline at the end of the file are fine.

Speed: the line stays bytes (``float``/``int`` parse bytes; UTF-8 is validated by a full decode
only for the rare non-ASCII lines, since YFCC URL-encodes its text columns), one partial
``split`` per line, no regex, and each raw tag is URL-decoded once per distinct spelling (a
bounded dict cache: tags repeat a lot). Only kept photos' user and tags are decoded.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm

from locsens.data.compressed import BZIP2, GZIP, compressed_position, detect_compression, open_input
from locsens.data.tags import BadTagEncoding, normalise_tag

NUM_COLUMNS = 25
COLUMN_NAMES = (
    "line_number",
    "photo_id",
    "photo_hash",
    "user_nsid",
    "user_nickname",
    "date_taken",
    "date_uploaded",
    "capture_device",
    "title",
    "description",
    "user_tags",
    "machine_tags",
    "longitude",
    "latitude",
    "accuracy",
    "page_url",
    "download_url",
    "license_name",
    "license_url",
    "server_id",
    "farm_id",
    "secret",
    "original_secret",
    "extension",
    "marker",
)
COL_PHOTO_ID, COL_USER, COL_TAGS, COL_LON, COL_LAT, COL_MARKER = 1, 3, 10, 12, 13, 24

MALFORMED_REASONS = (
    "wrong_column_count",
    "bad_encoding",
    "bad_photo_id",
    "bad_marker",
    "bad_longitude",
    "bad_latitude",
)
DROP_REASONS = ("video", "untagged", "not_geotagged", "out_of_range", "null_island")
KEPT = "kept"
INT64_MAX = 2**63 - 1
TAG_CACHE_MAX = 2_000_000  # distinct raw tag spellings kept in the normalisation cache (bounds memory)
PROGRESS_EVERY = 1 << 16  # lines between progress-bar updates
HEAD_BYTES = 1 << 20  # the start of the file checked for line endings; a real line is ~0.5 KB
LONG_LINE_BYTES = 1 << 20  # a malformed line this long is named as a sign of a wrong file


class YfccFormatError(ValueError):
    """A malformed line in strict mode (the message names file, 1-based line number and field), or a file-level
    problem in any mode (the message names the file and the problem)."""


class YfccPhoto(NamedTuple):
    """One kept photo: what ingestion needs from a YFCC100M line."""

    photo_id: int
    user: str  # Flickr NSID, e.g. "39089491@N00"
    lon: float
    lat: float
    tags: list[str]  # normalised user tags in the photo's order, duplicates kept (may be empty)


@dataclass
class ParseStats:
    """What a parse saw. ``reasons`` are exclusive per line and sum to ``lines``."""

    lines: int = 0
    reasons: Counter = field(default_factory=Counter)
    tagged: int = 0  # well-formed lines (photo or video) with a non-empty user-tag column
    geotagged: int = 0  # well-formed lines with longitude and latitude set
    tagged_and_geotagged: int = 0
    videos: int = 0

    @property
    def kept(self) -> int:
        return self.reasons[KEPT]

    def merge(self, other: ParseStats) -> None:
        self.lines += other.lines
        self.reasons.update(other.reasons)
        self.tagged += other.tagged
        self.geotagged += other.geotagged
        self.tagged_and_geotagged += other.tagged_and_geotagged
        self.videos += other.videos


def _field(col: int) -> str:
    return f"'{COLUMN_NAMES[col]}' (column {col})"


def _show(raw: bytes) -> str:
    """A field's value for an error message: decoded leniently, cut to 40 characters, quoted."""
    return repr(raw[:40].decode("utf-8", "replace"))


def _bad_encoding_field(line: bytes) -> str:
    """Name the first column whose bytes are not valid UTF-8 (slow path, malformed lines only)."""
    for col, raw in enumerate(line.rstrip(b"\r\n").split(b"\t")):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            name = _field(col) if col < NUM_COLUMNS else f"column {col}"
            return f"{name}: invalid UTF-8 byte at offset {e.start} of the field"
    return "line: invalid UTF-8"


class YfccReader:
    """Iterate over the kept photos of one ``yfcc100m_dataset`` file; ``stats`` fills as it goes.

    >>> reader = YfccReader("yfcc100m_dataset")            # doctest: +SKIP
    >>> for photo in reader: ...                           # doctest: +SKIP
    >>> reader.stats.reasons                               # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        wordlist: Container[str] | None = None,
        strict: bool = False,
        progress: bool | None = None,
        tag_cache: dict | None = None,
    ):
        self.path = Path(path)
        self.wordlist = wordlist
        self.strict = strict
        self.progress = progress
        # raw tag bytes -> normalised tag; share one only between readers with the same wordlist
        self.tag_cache: dict[bytes, str | None] = {} if tag_cache is None else tag_cache
        self.stats = ParseStats()
        self._compression: str | None = None

    @property
    def compression(self) -> str:
        """``"plain"``, ``"bzip2"`` or ``"gzip"``: how the file is stored, from its magic bytes."""
        if self._compression is None:
            self._compression = detect_compression(self.path)
        return self._compression

    def _check_line_endings(self, fh) -> None:
        """Refuse, before the parse, a file whose start shows it is not line-by-line YFCC text."""
        head = fh.peek(HEAD_BYTES)[:HEAD_BYTES]
        if b"\n" in head:
            return
        if b"\r" in head:
            name = self.path.name
            unix = f"{self.path.stem.removesuffix('.tsv')}.unix.tsv"
            cat = {BZIP2: "bzcat", GZIP: "zcat"}.get(self.compression)
            convert = f"{cat} {name} | tr '\\r' '\\n' > {unix}" if cat else f"tr '\\r' '\\n' < {name} > {unix}"
            raise YfccFormatError(
                f"{self.path}: uses CR-only line endings (old Mac): '\\r' but no '\\n' in its first"
                f" {len(head):,} bytes, so the whole file would read as one line; convert with: {convert}"
            )
        if len(head) >= HEAD_BYTES:
            raise YfccFormatError(
                f"{self.path}: no line break in its first {len(head):,} bytes (a yfcc100m_dataset line is ~0.5 KB):"
                " not a yfcc100m_dataset file?"
            )

    def _malformed(self, reason: str, lineno: int, detail: str) -> None:
        if self.strict:
            raise YfccFormatError(f"{self.path}: line {lineno}: {detail}")
        self.stats.reasons[reason] += 1

    def __iter__(self) -> Iterator[YfccPhoto]:
        counts = dict.fromkeys(("lines", "tagged", "geotagged", "both", "video_facts", KEPT, *DROP_REASONS), 0)
        size = self.path.stat().st_size
        show = self.progress if self.progress is not None else size > (64 << 20)
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=self.path.name, disable=not show)
        try:
            with open_input(self.path) as fh:
                self._check_line_endings(fh)
                yield from self._photos(fh, bar, counts)
            bar.update(size - bar.n)
        finally:  # also on strict errors and early exits: the stats say how far the parse got
            bar.close()
            self._add_counts(counts)

    def _photos(self, fh, bar, counts: dict) -> Iterator[YfccPhoto]:
        """The hot loop: one pass of byte-level checks per line, inline (a function call per line costs
        ~5%); the rare branches (malformed fields, coordinates, odd markers) call out."""
        lineno = kept = video = untagged = not_geo = out_of_range = null_island = n_tagged = n_geo = n_both = 0
        try:
            for line in fh:
                lineno += 1
                if not lineno & (PROGRESS_EVERY - 1):
                    bar.update(compressed_position(fh) - bar.n)
                if not line.isascii():  # YFCC URL-encodes text columns: non-ASCII is rare
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        self._malformed("bad_encoding", lineno, _bad_encoding_field(line))
                        continue
                # columns 0..13 one by one, 14..24 left joined: fewer objects than a full split
                cols = line.split(b"\t", COL_LAT + 1)
                if len(cols) != COL_LAT + 2 or cols[-1].count(b"\t") != NUM_COLUMNS - COL_LAT - 2:
                    self._wrong_column_count(line, lineno)
                    continue
                pid = cols[COL_PHOTO_ID]
                if not pid.isdigit() or (len(pid) >= 19 and (len(pid) > 19 or int(pid) > INT64_MAX)):
                    self._malformed(
                        "bad_photo_id",
                        lineno,
                        f"field {_field(COL_PHOTO_ID)}: {_show(pid)} is not a non-negative int64",
                    )
                    continue
                rest = cols[-1]
                if rest.endswith(b"\t0\n"):
                    is_video = False
                elif rest.endswith(b"\t1\n"):
                    is_video = True
                else:  # last line without newline, CRLF, or a bad marker
                    is_video = self._marker(rest, lineno)
                    if is_video is None:
                        continue
                raw_lon, raw_lat = cols[COL_LON], cols[COL_LAT]
                if raw_lon or raw_lat:
                    where = self._coordinates(raw_lon, raw_lat, lineno)
                    if where is None:
                        continue
                    geo, lon, lat = where
                    n_geo += 1
                else:
                    geo, lon, lat = 0, 0.0, 0.0
                raw_tags = cols[COL_TAGS]
                if raw_tags:
                    n_tagged += 1
                    if geo:
                        n_both += 1
                if is_video:
                    video += 1
                    continue
                if not raw_tags:
                    untagged += 1
                    continue
                if geo != 1:
                    if geo == 0:
                        not_geo += 1
                    else:
                        out_of_range += 1
                    continue
                if lat == 0.0 and lon == 0.0:
                    null_island += 1
                    continue
                try:
                    tags, user = self._tags(raw_tags), cols[COL_USER].decode("utf-8")
                except BadTagEncoding as e:
                    self._malformed("bad_encoding", lineno, f"field {_field(COL_TAGS)}: a tag {e}")
                    continue
                if not user.isprintable():  # a NUL or control byte cannot be stored (nor shown) as a name
                    self._malformed(
                        "bad_encoding",
                        lineno,
                        f"field {_field(COL_USER)}: {_show(cols[COL_USER])} has control characters",
                    )
                    continue
                kept += 1
                yield YfccPhoto(int(pid), user, lon, lat, tags)
        finally:
            counts.update(
                lines=lineno,
                tagged=n_tagged,
                geotagged=n_geo,
                both=n_both,
                video_facts=video,
                video=video,
                untagged=untagged,
                not_geotagged=not_geo,
                out_of_range=out_of_range,
                null_island=null_island,
            )
            counts[KEPT] = kept

    def _tags(self, raw_tags: bytes) -> list[str]:
        """The normalised tags of a kept photo; each raw spelling is URL-decoded once (a bounded cache)."""
        cache, tags = self.tag_cache, []
        for raw in raw_tags.split(b","):
            try:
                tag = cache[raw]
            except KeyError:
                if len(cache) >= TAG_CACHE_MAX:
                    cache.clear()
                try:
                    tag = cache[raw] = normalise_tag(raw.decode("utf-8"), self.wordlist) if raw else None
                except BadTagEncoding as e:
                    tag = cache[raw] = e  # cached too: a broken spelling repeats like any other
            if isinstance(tag, BadTagEncoding):
                raise BadTagEncoding(str(tag))
            if tag is not None:
                tags.append(tag)
        return tags

    def _coordinates(self, raw_lon: bytes, raw_lat: bytes, lineno: int) -> tuple[int, float, float] | None:
        """(1 in range / -1 out of range, lon, lat), or None for a malformed field (counted or raised)."""
        try:
            lon = float(raw_lon)
        except ValueError:
            self._malformed("bad_longitude", lineno, f"field {_field(COL_LON)}: {_show(raw_lon)} is not a number")
            return None
        try:
            lat = float(raw_lat)
        except ValueError:
            self._malformed("bad_latitude", lineno, f"field {_field(COL_LAT)}: {_show(raw_lat)} is not a number")
            return None
        if -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0:
            return 1, lon, lat
        if not math.isfinite(lon):
            self._malformed("bad_longitude", lineno, f"field {_field(COL_LON)}: {_show(raw_lon)} is not finite")
            return None
        if not math.isfinite(lat):
            self._malformed("bad_latitude", lineno, f"field {_field(COL_LAT)}: {_show(raw_lat)} is not finite")
            return None
        return -1, lon, lat  # well-formed but out of range

    def _marker(self, rest: bytes, lineno: int) -> bool | None:
        """Video marker of a line whose end is not the usual ``\\t0\\n`` / ``\\t1\\n``; None if malformed."""
        marker = rest[rest.rfind(b"\t") + 1 :].rstrip(b"\r\n")
        if marker != b"0" and marker != b"1":
            self._malformed(
                "bad_marker", lineno, f"field {_field(COL_MARKER)}: {_show(marker)}, expected 0 (photo) or 1 (video)"
            )
            return None
        return marker == b"1"

    def _wrong_column_count(self, line: bytes, lineno: int) -> None:
        got = line.count(b"\t") + 1
        detail = f"line: expected {NUM_COLUMNS} tab-separated columns, got {got}"
        if len(line) > LONG_LINE_BYTES:
            detail += f" in a line of {len(line):,} bytes (a real one is ~0.5 KB): not a YFCC file?"
        self._malformed("wrong_column_count", lineno, detail)

    def _add_counts(self, counts: dict) -> None:
        stats = self.stats
        stats.lines += counts["lines"]
        stats.tagged += counts["tagged"]
        stats.geotagged += counts["geotagged"]
        stats.tagged_and_geotagged += counts["both"]
        stats.videos += counts["video_facts"]
        for name in (KEPT, *DROP_REASONS):
            if counts[name]:
                stats.reasons[name] += counts[name]
