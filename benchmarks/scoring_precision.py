"""Does reduced precision change a trained LocSens' evaluation? fp32 vs bf16 vs int8 scoring of a real
checkpoint on the demo world: tagging A@1/10/50 and location-sensitive P@10 per distance, computed by the
evaluation's own metrics on the same test images and queries, plus the share of images whose top-10 tag
set is identical to fp32's, and each dtype's pairs/s relative to fp32 in the same run.

Tagging scores every vocabulary tag (no shortlist: the raw reduced-precision scores are ranked, the
strictest case); retrieval keeps the engine's top-10 (with its fp32-rescored shortlist for bf16 / int8).
On CPUs without native bf16 (AVX512-BF16 / AMX) bf16 runs emulated by PyTorch, far slower than fp32; the
numbers are still bf16's numbers.

Run: .venv/bin/python benchmarks/scoring_precision.py --run outputs/demo-demo/locsens_raw [--images 200 --queries 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from locsens.artifacts import RunLayout
from locsens.checkpointing import load_model
from locsens.data.store import DatasetStore, EmbeddingStore
from locsens.eval.pipeline import _sample
from locsens.metrics.retrieval import LocationSensitivePrecision, RetrievalCandidates, build_location_queries
from locsens.metrics.tagging import ground_truth_from_csr, tagging_accuracy
from locsens.scoring import ScoringEngine

THRESHOLDS = [float("inf"), 2500.0, 750.0, 200.0, 25.0, 1.0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a LocSens run directory (metrics.json names its best checkpoint)")
    p.add_argument("--world", default="data/demo")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--dtypes", default="fp32,bf16,int8")
    a = p.parse_args()
    ckpt = RunLayout(Path(a.run)).best_checkpoint()
    model, _ = load_model(ckpt, expect="locsens")
    ds = DatasetStore(f"{a.world}/dataset.h5")
    store = EmbeddingStore(f"{a.world}/embeddings/mcc.h5", ds)
    image, tag = torch.from_numpy(store.image), torch.from_numpy(store.tag)
    rows = _sample(ds.split_rows("test"), a.images, 0)
    r = torch.as_tensor(rows)
    lat, lon = torch.from_numpy(ds.lat), torch.from_numpy(ds.lon)
    target = ground_truth_from_csr(ds.tags_indptr, ds.tags_indices, rows)
    cand = RetrievalCandidates.from_csr(ds.tags_indptr, ds.tags_indices, ds.num_tags, lat=ds.lat, lon=ds.lon, rows=rows)
    q = build_location_queries(cand, min_query_images=3, seed=0)[: a.queries]
    print(f"{ckpt}\n{len(rows)} test images x {tag.shape[0]} tags; {len(q)} location queries over the same images")
    ref_top, ref_time = None, None
    for dtype in a.dtypes.split(","):
        engine = ScoringEngine(model, dtype=dtype, tag_embeddings=tag)
        t0 = time.perf_counter()
        scores = torch.cat(
            [
                engine.score_tags(image[r[s : s + 50]], lat[r[s : s + 50]], lon[r[s : s + 50]])
                for s in range(0, len(r), 50)
            ]
        )
        dt = time.perf_counter() - t0
        acc = tagging_accuracy(scores, target, ks=(1, 10, 50))
        top = torch.topk(scores, 10, dim=1).indices
        metric = LocationSensitivePrecision(cand, thresholds_km=THRESHOLDS, k=10)
        prepared = engine.prepare_images(image[r])
        for s in range(0, len(q), 64):
            qb = q[s : s + 64]
            metric.update(engine.score_images(tag[qb.tag], qb.lat, qb.lon, prepared, k=10)[1], qb)
        ret = metric.compute()
        if ref_top is None:
            ref_top, ref_time = top, dt
        same = np.mean([set(x.tolist()) == set(y.tolist()) for x, y in zip(top, ref_top)])
        print(
            f"{engine.dtype_used:5s} A@1/10/50 {acc['A@1']:.2f} / {acc['A@10']:.2f} / {acc['A@50']:.2f} | "
            "P@10 "
            + " / ".join(f"{float(v):.2f}" for v in ret.values())
            + f" | top-10 sets = fp32's on {100 * same:.1f}% of images | {ref_time / dt:.2f}x fp32's pairs/s"
        )


if __name__ == "__main__":
    main()
