"""Open a raw input -- plain, bzip2 or gzip, told apart by its magic bytes, never its name -- as one binary stream.

The real YFCC100M ``yfcc100m_dataset`` ships bzip2-compressed (~100M lines, ~53 GB of text). Decompression
streams (constant memory) and runs in worker threads of ``indexed_bzip2`` (bzip2) or ``rapidgzip`` (gzip), so
it overlaps the caller's parsing; without those packages Python's single-threaded ``bz2`` / ``gzip`` modules do
the same job, slower (a logged warning says so). Concatenated (multi-stream) files, as ``pbzip2`` or
``cat a.gz b.gz`` write them, read completely. A truncated or corrupt file raises :class:`CorruptInputError`
naming the file, when the damage is reached (lines before it have been read by then).

    >>> with open_input("yfcc100m_dataset.bz2") as fh:    # doctest: +SKIP
    ...     for line in fh: ...                            # bytes, b"\\n" kept
    ...     done = compressed_position(fh)                 # of os.path.getsize(path): for a progress bar
"""

from __future__ import annotations

import atexit
import bz2
import gzip
import importlib
import io
import logging
import os
import weakref
import zlib
from pathlib import Path

PLAIN, BZIP2, GZIP = "plain", "bzip2", "gzip"
# Decoded bytes per call into the decoder: each call into a parallel decoder costs (64 KiB reads took ~1.8x the
# CPU of 1 MiB reads with indexed_bzip2), and this much also shows the start of a file to YfccReader's checks.
BUFFER_BYTES = 1 << 20
# An empty bzip2 stream is 14 bytes (4 header, 6 end-of-stream marker, 4 CRC): anything shorter is truncated,
# and indexed_bzip2 in parallel mode reads such a stub as an empty file instead of failing.
MIN_BZIP2_BYTES = 14
PARALLEL_MODULE = {BZIP2: "indexed_bzip2", GZIP: "rapidgzip"}
# The parser takes ~100 MB/s of text and one bzip2 worker gives ~50 MB/s: more than 8 workers only
# prefetch further ahead (memory), they cannot make a line-by-line parse faster.
MAX_PARALLELIZATION = 8
# Compressed formats this module does not decode: named in an error instead of parsed as garbage text.
UNSUPPORTED_MAGIC = {
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7z",
}

logger = logging.getLogger(__name__)


class CorruptInputError(OSError):
    """A compressed input is truncated or corrupt. The message names the file."""


def detect_compression(path: str | os.PathLike) -> str:
    """``"bzip2"`` (``BZh`` and a block-size digit 1-9), ``"gzip"`` (``1f 8b``) or ``"plain"``, from the first bytes."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if len(magic) >= 4 and magic[:3] == b"BZh" and 0x31 <= magic[3] <= 0x39:
        return BZIP2
    if magic[:2] == b"\x1f\x8b":
        return GZIP
    for prefix, name in UNSUPPORTED_MAGIC.items():
        if magic.startswith(prefix):
            raise ValueError(f"{path}: is {name}-compressed; expected a plain, bzip2 or gzip file (decompress it)")
    return PLAIN


def default_parallelization() -> int:
    """Decoder worker threads: one per core this process may run on, at most ``MAX_PARALLELIZATION``.

    ``sched_getaffinity``, not ``cpu_count``: a container or ``taskset`` may allow fewer cores than the machine
    has. The workers sleep once their prefetch is full, so the parsing thread still gets its share: on 2 cores,
    YfccReader parsed a bz2 file ~1.5x faster with 2 workers than with 1 (which decodes in the calling thread:
    no overlap with parsing) and ~1.8x faster than with 3 (oversubscribed, the workers' CPU time doubled).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_PARALLELIZATION))


def _parallel_module(compression: str):
    """The parallel decoder's module, or None when it is not installed."""
    try:
        return importlib.import_module(PARALLEL_MODULE[compression])
    except ImportError:
        return None


# rapidgzip aborts the interpreter ("terminate called") if one of its files is still open at exit, e.g. a
# half-read YfccReader iterator held by a module global: close what is left before Python finalizes.
_open_streams: weakref.WeakSet[_DecodedStream] = weakref.WeakSet()
atexit.register(lambda: [stream.close() for stream in list(_open_streams)])


class _DecodedStream(io.RawIOBase):
    """The decoded bytes of one compressed file; decoder errors become :class:`CorruptInputError` naming it."""

    def __init__(self, path: Path, compression: str, parallelization: int | None):
        self.path = path
        self.compression = compression
        self._size = path.stat().st_size
        self._position = 0  # compressed bytes consumed, kept monotonic for progress bars
        self._decoder = None
        self._file = None  # the compressed file under a Python decoder (its tell() is the position)
        if compression == BZIP2 and self._size < MIN_BZIP2_BYTES:
            raise self._corrupt(f"{self._size} bytes, shorter than any complete bzip2 stream ({MIN_BZIP2_BYTES})")
        module = _parallel_module(compression)
        self.parallel = module is not None
        try:
            if module is None:
                logger.warning(
                    "%s is not installed: decoding %s with Python's single-threaded %s module (slower)",
                    PARALLEL_MODULE[compression],
                    path,
                    "bz2" if compression == BZIP2 else "gzip",
                )
                self._file = open(path, "rb")
                self._decoder = bz2.BZ2File(self._file) if compression == BZIP2 else gzip.GzipFile(fileobj=self._file)
            else:
                # indexed_bzip2.open gives a BufferedReader, rapidgzip.open an unbuffered file (whose own readline
                # reads byte by byte): both are read here in BUFFER_BYTES calls, straight into our buffer
                workers = parallelization or default_parallelization()
                self._decoder = module.open(str(path), parallelization=workers)
        except (EOFError, OSError, RuntimeError, ValueError, zlib.error) as e:
            self.close()
            raise self._corrupt(f"{type(e).__name__}: {e}") from e
        _open_streams.add(self)

    def _corrupt(self, detail: str) -> CorruptInputError:
        return CorruptInputError(f"{self.path}: {self.compression} data is truncated or corrupt ({detail})")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            n = self._decoder.readinto(buffer)
        except (EOFError, OSError, RuntimeError, ValueError, zlib.error) as e:
            raise self._corrupt(f"{type(e).__name__}: {e}") from e
        if not n and self.parallel and self.compression == GZIP:
            # rapidgzip ends a truncated file silently after its last complete deflate block; a complete
            # file is decoded to its very last bit (tell_compressed counts bits)
            end = self._decoder.tell_compressed()
            if end != 8 * self._size:
                raise self._corrupt(f"decoding stopped at byte {end // 8:,} of {self._size:,}: the file ends early")
        return n

    def compressed_position(self) -> int:
        if self._file is not None:
            position = self._file.tell()
        else:  # the parallel decoders count bits; indexed_bzip2's parallel reader says 0 once at the end
            position = self._decoder.tell_compressed() // 8
        self._position = max(self._position, min(position, self._size))
        return self._position

    def close(self) -> None:
        if not self.closed:
            _open_streams.discard(self)
            for part in (self._decoder, self._file):  # the decoder first: closing it joins its worker threads
                if part is not None:
                    part.close()
        super().close()


def open_input(path: str | os.PathLike, *, parallelization: int | None = None) -> io.BufferedReader:
    """Open ``path`` for streaming binary reads (iterate it for lines), decompressing bzip2 or gzip.

    ``parallelization``: decoder worker threads (default :func:`default_parallelization`); ignored for plain
    files and by the Python fallback decoders.
    """
    path = Path(path)
    compression = detect_compression(path)
    if compression == PLAIN:
        return open(path, "rb", buffering=BUFFER_BYTES)
    return io.BufferedReader(_DecodedStream(path, compression, parallelization), BUFFER_BYTES)


def compressed_position(fh: io.BufferedReader) -> int:
    """Bytes of the file on disk that ``fh`` (from :func:`open_input`) has consumed: progress against its size.

    Approximate for compressed files (decoders read ahead), never beyond the file's size.
    """
    raw = fh.raw
    return raw.compressed_position() if isinstance(raw, _DecodedStream) else fh.tell()
