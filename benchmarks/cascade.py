"""Shortlist and rerank vs exhaustive LocSens scoring, in one run: what the cascade loses and what it saves.

1. Demo world, a trained LocSens run, tagging (``--images`` test images, with and without place names):
   per shortlist size (K agnostic tags + P place-prior tags) the recall of the exhaustive top-10 inside
   the shortlist, the share of images whose top-10 is exhaustive's, A@1/10/50 against exhaustive, LocSens
   pairs scored and the wall-clock speed-up (the shortlist's own cost included).
2. Demo world, retrieval over the WHOLE test split as candidates (``--queries`` location queries of the
   full protocol): per (K agnostic images + K' nearest images) the recall of the exhaustive top-10, P@10
   at every distance against exhaustive, pairs and speed-up.
3. Paper scale, cost only (V = 100,000 tags, 500,000 test images, the paper-size scorer with random
   weights): seconds per tagged image and per retrieval query, exhaustive (engine pairs/s x pairs) vs
   the cascade (shortlist construction at full size + the rerank, both timed), and the pairs ratio.
   Recall at that scale needs a model trained at that scale; section 1 and 2 give it for the demo model.

Both sides go through the evaluation's own code (``locsens.eval.pipeline.evaluate_tagging`` /
``evaluate_retrieval``) with the engine's dtype ``--dtype`` (auto: bf16 where native, else fp32).

Run: .venv/bin/python benchmarks/cascade.py --run outputs/demo-demo/locsens_raw [--images 1000 --queries 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from locsens.artifacts import RunLayout
from locsens.checkpointing import checkpoint_record
from locsens.data.store import DatasetStore
from locsens.eval.methods import LocSensMethod
from locsens.eval.pipeline import _sample, evaluate_retrieval, evaluate_tagging
from locsens.metrics.retrieval import RetrievalCandidates, build_location_queries
from locsens.metrics.tagging import place_name_mask

THRESHOLDS = [float("inf"), 2500.0, 750.0, 200.0, 25.0, 1.0]


def sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in pair.split(":")) for pair in text.split(",")]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def recall(shortlist: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each exact top-10 list (``-1`` = none) found in the row's shortlist."""
    hit = (exact[:, :, None] == shortlist[:, None, :]).any(-1) & (exact >= 0)
    return float(hit.sum() / (exact >= 0).sum().clamp_min(1))


def same_sets(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b)]))


def demo_tagging(args, ds, ckpt, embeddings) -> None:
    rows = _sample(ds.split_rows("test"), args.images, 0)
    exclude = place_name_mask(ds.vocab, ds.place_names)
    exhaustive = LocSensMethod("exhaustive", ds, ckpt, embeddings, dtype=args.dtype)
    (res, preds), base_time = timed(lambda: evaluate_tagging({"x": exhaustive}, ds, rows, (1, 10, 50), 512))
    ref, (ref_all, ref_omit) = res["x"], preds["x"]
    v = ds.num_tags
    print(
        f"\n## Tagging, demo world: {len(rows):,} test images x {v:,} tags (engine {exhaustive.engine.dtype_used}); "
        f"exhaustive {base_time:.1f} s for both rankings ({exhaustive.pairs_scored['tagging']:,} pairs)\n"
    )
    print(
        "| K + P | % of V | recall@10 | recall@10 (no places) | top-10 = exhaustive | dA@1 | dA@10 | dA@50 "
        "| dA@10 (no places) | pairs | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, p in sizes(args.tag_sizes):
        m = LocSensMethod("cascade", ds, ckpt, embeddings, dtype=args.dtype, tag_shortlist={"agnostic": k, "prior": p})
        (got, gpred), t = timed(lambda m=m: evaluate_tagging({"x": m}, ds, rows, (1, 10, 50), 512))
        short_all = torch.cat([m.tag_shortlist(rows[s : s + 512]) for s in range(0, len(rows), 512)])
        short_omit = torch.cat([m.tag_shortlist(rows[s : s + 512], exclude) for s in range(0, len(rows), 512)])
        r_all = recall(short_all, torch.from_numpy(ref_all[:, :10]).long())
        r_omit = recall(short_omit, torch.from_numpy(ref_omit[:, :10]).long())
        a, b = got["x"]["with_places"], ref["with_places"]
        ao, bo = got["x"]["places_omitted"], ref["places_omitted"]
        same = same_sets(gpred["x"][0][:, :10], ref_all[:, :10])
        print(
            f"| {k} + {p} | {100 * m.tag_shortlist.size / v:.1f} | {100 * r_all:.2f} | {100 * r_omit:.2f} "
            f"| {100 * same:.1f}% | {a['A@1'] - b['A@1']:+.2f} | {a['A@10'] - b['A@10']:+.2f} "
            f"| {a['A@50'] - b['A@50']:+.2f} | {ao['A@10'] - bo['A@10']:+.2f} | {m.pairs_scored['tagging']:,} "
            f"| {base_time / t:.1f}x |"
        )
    print(
        f"\nexhaustive A@1/10/50 {b['A@1']:.2f} / {b['A@10']:.2f} / {b['A@50']:.2f} (places omitted A@10 {bo['A@10']:.2f})"
    )


def demo_retrieval(args, ds, ckpt, embeddings) -> None:
    cand = ds.split_rows("test")
    candidates = RetrievalCandidates.from_csr(
        ds.tags_indptr, ds.tags_indices, ds.num_tags, lat=ds.lat, lon=ds.lon, rows=cand
    )
    n_all = len(build_location_queries(candidates, min_query_images=10, seed=0))
    rcfg = OmegaConf.create(
        {
            "k": 10,
            "thresholds_km": THRESHOLDS,
            "min_query_images": 10,
            "exclude_query_image": False,
            "max_queries": args.queries,
            "chunk_queries": 64,
        }
    )
    exhaustive = LocSensMethod("exhaustive", ds, ckpt, embeddings, dtype=args.dtype)
    ref, base_time = timed(lambda: evaluate_retrieval({"x": exhaustive}, ds, cand, rcfg, 0))
    q = ref["queries"]
    exact = torch.from_numpy(ref["location_sensitive_predictions"]["x"]).long()
    ub, base = ref["location_sensitive"]["upper_bound"], ref["location_sensitive"]["x"]
    keys = list(base)
    print(
        f"\n## Retrieval, demo world: {len(q):,} of the protocol's {n_all:,} location queries x all {len(cand):,} "
        f"test images; exhaustive {base_time:.1f} s ({exhaustive.pairs_scored['retrieval']:,} pairs)\n"
    )
    print(f"| K + K' | recall@10 | top-10 = exhaustive | {' | '.join(f'dP@10 {k}' for k in keys)} | pairs | speed-up |")
    print("|---|---|---|" + "---|" * len(keys) + "---|---|")
    for k, near in sizes(args.image_sizes):
        m = LocSensMethod(
            "cascade", ds, ckpt, embeddings, dtype=args.dtype, image_shortlist={"agnostic": k, "nearest": near}
        )
        got, t = timed(lambda m=m: evaluate_retrieval({"x": m}, ds, cand, rcfg, 0))
        builder = m._candidates[2]
        short = torch.cat(
            [builder(q.tag[s : s + 512], q.lat[s : s + 512], q.lon[s : s + 512]) for s in range(0, len(q), 512)]
        )
        ids = got["location_sensitive_predictions"]["x"]
        deltas = " | ".join(f"{got['location_sensitive']['x'][key] - base[key]:+.2f}" for key in keys)
        print(
            f"| {k} + {near} | {100 * recall(short, exact):.2f} | {100 * same_sets(ids, exact.numpy()):.1f}% | {deltas} "
            f"| {m.pairs_scored['retrieval']:,} | {base_time / t:.1f}x |"
        )
    print("\nexhaustive P@10 " + " / ".join(f"{k} {base[k]:.2f}" for k in keys))
    print("upper bound P@10 " + " / ".join(f"{k} {ub[k]:.2f}" for k in keys))


def paper_scale(args) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from scoring import paper_model

    from locsens.eval.shortlist import ImageShortlist, union
    from locsens.scoring import ScoringEngine

    v, n, e = 100_000, 500_000, 300
    g = torch.Generator().manual_seed(0)
    model = paper_model()
    vocab = torch.randn(v, e, generator=g)
    images = torch.randn(n, e, generator=g)
    lat, lon = torch.rand(n, generator=g) * 180 - 90, torch.rand(n, generator=g) * 360 - 180
    engine = ScoringEngine(model, dtype=args.dtype, tag_embeddings=vocab)
    b = args.paper_queries
    img, qlat, qlon = images[:b], lat[:b], lon[:b]
    engine._vocabulary_block()  # once per vocabulary and weights, either way
    slice_tags = 4096
    sub = ScoringEngine(model, dtype=args.dtype, tag_embeddings=vocab[:slice_tags])
    sub.score_tags(img[:1], qlat[:1], qlon[:1], k=10)
    _, t = timed(lambda: sub.score_tags(img[:2], qlat[:2], qlon[:2], k=10))
    rate = 2 * slice_tags / t
    print(
        f"\n## Paper scale, cost (V = {v:,} tags, N = {n:,} test images, paper-size scorer, engine "
        f"{engine.dtype_used} at {rate:,.0f} pairs/s measured on {slice_tags:,} tags x 2 queries)\n"
    )
    print("| task | shortlist | pairs / query | x fewer pairs | s / query exhaustive | s / query cascade | speed-up |")
    print("|---|---|---|---|---|---|---|")
    norm_vocab = torch.nn.functional.normalize(vocab, dim=-1)
    for k, p in sizes(args.paper_tag_sizes):

        def cascade(k=k, p=p):
            s = torch.nn.functional.normalize(img, dim=-1) @ norm_vocab.T
            agnostic = torch.topk(s, k, dim=1).indices
            prior = torch.randint(0, v, (b, p), generator=g)  # a place prior's top-P is a lookup of P ids
            return engine.score_tags(img, qlat, qlon, k=50, candidates=union(agnostic, prior))

        cascade()
        _, t = timed(cascade)
        ex = v / rate
        print(
            f"| tagging | {k} + {p} | {k + p:,} | {v / (k + p):,.0f}x | {ex:.2f} | {t / b:.4f} | {ex / (t / b):,.0f}x |"
        )
    prepared_n = 20_000  # the rerank's cost does not depend on N; the shortlist is built over all N
    prepared = engine.prepare_images(images[:prepared_n])
    tags = torch.randint(0, v, (b,), generator=g)
    for k, near in sizes(args.paper_image_sizes):
        builder = ImageShortlist(images, vocab, lat, lon, "cosine", k, near)

        def cascade(builder=builder):
            short = builder(tags, qlat, qlon) % prepared_n
            return engine.score_images(tags, qlat, qlon, prepared, k=10, shortlist=union(short))

        cascade()
        _, t = timed(cascade)
        ex = n / rate
        print(
            f"| retrieval | {k} + {near} | {k + near:,} | {n / (k + near):,.0f}x | {ex:.1f} | {t / b:.4f} "
            f"| {ex / (t / b):,.0f}x |"
        )
    print(
        f"\n(cascade timed on {b} queries: the agnostic top-K over all {v:,} tags / {n:,} images, the k-d tree over "
        f"{n:,} locations and the rerank; exhaustive = pairs / measured pairs/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="outputs/demo-demo/locsens_raw", help="a finished LocSens run directory")
    ap.add_argument("--world", default="data/demo")
    ap.add_argument("--images", type=int, default=1000, help="test images of the tagging comparison")
    ap.add_argument("--queries", type=int, default=1000, help="location queries of the retrieval comparison")
    ap.add_argument("--tag-sizes", default="25:25,50:25,50:50,100:50,200:50", help="K:P pairs")
    ap.add_argument("--image-sizes", default="100:100,250:250,500:500,1000:0,0:1000", help="K:K' pairs")
    ap.add_argument("--paper-tag-sizes", default="100:50,500:100")
    ap.add_argument("--paper-image-sizes", default="500:500")
    ap.add_argument("--paper-queries", type=int, default=32)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--skip-paper-scale", action="store_true")
    args = ap.parse_args()
    started = time.perf_counter()
    ckpt = RunLayout(Path(args.run)).best_checkpoint()
    embeddings = checkpoint_record(ckpt)["made_from"]["embeddings"]["path"]
    ds = DatasetStore(Path(args.world) / "dataset.h5")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {ckpt}")
    demo_tagging(args, ds, ckpt, embeddings)
    demo_retrieval(args, ds, ckpt, embeddings)
    if not args.skip_paper_scale:
        paper_scale(args)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
