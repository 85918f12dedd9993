"""Evaluation throughput: tagging evaluation (images/s) of the pipeline vs its bare core, same run.

Builds a random dataset store (N test images, V tags, CSR tags, place names) and an embedding store,
then times ``locsens.eval.pipeline.evaluate_tagging`` for an embedding method -- scores, exact
tie-ruled top-50 with and without place names, two TaggingAccuracy updates -- against the bare
baseline of the same scores followed by one plain ``torch.topk`` (no ties rule, no exclusion, no metric).
Ratio pipeline/bare: the price of the exact protocol.

Run: .venv/bin/python benchmarks/evaluate.py [--images 20000] [--tags 20000] [--dim 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from locsens.data.store import DatasetStore, write_dataset_store, write_embedding_store
from locsens.eval.methods import EmbeddingMethod
from locsens.eval.pipeline import evaluate_tagging


def random_stores(root: Path, n: int, v: int, d: int):
    rng = np.random.default_rng(0)
    n_tags = rng.integers(1, 8, n)
    indptr = np.concatenate([[0], np.cumsum(n_tags)])
    indices = np.minimum(rng.zipf(1.3, indptr[-1]) - 1, v - 1)
    vocab = [f"tag{i}" for i in range(v)]
    places = {lvl: [f"{lvl}{i}" for i in range(10)] for lvl in ("town", "region", "country", "continent")}
    write_dataset_store(
        root / "dataset.h5",
        photo_id=np.arange(n),
        user_index=np.zeros(n),
        users=["u@N00"],
        lat=rng.uniform(-60, 60, n),
        lon=rng.uniform(-180, 180, n),
        tags_indptr=indptr,
        tags_indices=indices,
        places=places,
        place_index={k: rng.integers(0, 10, n) for k in places},
        place_names=vocab[: v // 50],
        split=np.full(n, 2),
        vocab=vocab,
        vocab_count=np.ones(v, int),
    )
    write_embedding_store(
        root / "emb.h5",
        photo_id=np.arange(n),
        image=rng.normal(size=(n, d)),
        tag=rng.normal(size=(v, d)),
        vocab=vocab,
        model="random",
        checkpoint_sha256="-",
        similarity="cosine",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--tags", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--chunk", type=int, default=512)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_stores(root, a.images, a.tags, a.dim)
        ds = DatasetStore(root / "dataset.h5")
        method = EmbeddingMethod("emb", ds, root / "emb.h5")
        rows = ds.split_rows("test")
        t0 = time.perf_counter()
        for s in range(0, len(rows), a.chunk):
            torch.topk(method.tag_scores(rows[s : s + a.chunk]), 50, dim=1)
        t_bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_tagging({"emb": method}, ds, rows, (1, 10, 50), a.chunk)
        t_pipe = time.perf_counter() - t0
    n = len(rows)
    print(f"{n} test images x {a.tags} tags, {torch.get_num_threads()} threads")
    print(f"bare scores + topk : {n / t_bare:9.0f} images/s")
    print(
        f"evaluate_tagging   : {n / t_pipe:9.0f} images/s  (ratio pipeline/bare {t_bare / t_pipe:.2f}; "
        f"it ranks twice -- with and without place names -- and updates two metrics)"
    )


if __name__ == "__main__":
    main()
