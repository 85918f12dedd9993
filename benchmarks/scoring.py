"""Exhaustive LocSens tagging throughput: the scoring engine vs the original's naive broadcast forward,
paper-size model, V = 100,000 tags, all in one run (ratios are what count on a shared machine).

1. This machine's matmul GFLOP/s, fp32 and bf16 (``F.linear``, the engine's kernel: [M x 2048] by a
   2048 x 2048 weight; M = 4096, or 512 for bf16 where the CPU emulates it slowly; best over the run).
2. Naive fp32 (the original's method): repeat the (image, location) query once per tag, run the whole
   module forward per pair, batched over tags (``engine.chunk_pairs`` pairs per batch).
3. Engine fp32, bf16 (the CPU's verdict for ``dtype="auto"`` is printed) and int8 (opt-in): pairs/s
   with top-10 kept on the fly (bf16 / int8 include the fp32 rescore of their top-42); the vocabulary
   block (V = 100,000) is built once beforehand and timed separately. Where bf16 is native it runs as
   many pairs as the others, interleaved with them; where it is emulated, once on ``--bf16-pairs``.
   The throughput runs score a slice of the vocabulary per query (a full 100k-tag pass of one query
   costs ~2.6 TFLOP); per-pair cost does not depend on V.
4. Ranking preservation at paper size: top-10 tag sets of bf16 / int8 vs fp32 over a vocabulary slice,
   raw and with the engine's fp32-rescored shortlist. Where native bf16 is too slow to run that many
   pairs, the bf16 numerics are emulated exactly in fp32 (bf16-rounded weights, inputs and outputs,
   fp32 accumulation -- what a bf16 matmul computes) and the table says so.

Model: the paper's 900 -> 2048 -> 2048 -> 2048 -> 1024 -> 512 -> 1 (GroupNorm 32, eps 1e-3), N(0, 0.01)
init with GroupNorm affine parameters perturbed as training would (gamma ~ U(0.5, 1.5), beta ~ U(-0.2, 0.2)).

Run: .venv/bin/python benchmarks/scoring.py [--pairs 6000 --repeat 3] [--rank-queries 4 --rank-tags 2500]
(defaults: about 2 minutes on 2 busy cores)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from locsens.config import build_model
from locsens.models.locsens import LocSens
from locsens.scoring import ScoringEngine, bf16_verdict

V, E = 100_000, 300


def matmul_gflops(dtype: torch.dtype, rows: int, repeat: int = 3) -> float:
    """Best-of GFLOP/s of ``F.linear`` ([rows x 2048] by a 2048 x 2048 weight), the engine's kernel."""
    a = torch.randn(rows, 2048).to(dtype)
    b = torch.randn(2048, 2048).to(dtype)
    F.linear(a, b)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        F.linear(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * 2048 * 2048 / best / 1e9


def paper_model() -> LocSens:
    """experiment=locsens_paper's model, as the config builds it."""
    torch.manual_seed(0)
    model = build_model(["experiment=locsens_paper"], embed_dim=E).eval()
    with torch.no_grad():
        for m in model.scorer.layers:
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def macs_per_pair(model: LocSens) -> tuple[int, int]:
    """(whole forward incl. branches, engine's per-pair part: the scorer after its first Linear)."""
    linears = [m for m in model.scorer.layers if isinstance(m, nn.Linear)]
    scorer = sum(m.in_features * m.out_features for m in linears)
    branches = sum(b.linear.weight.numel() for b in (model.image_branch, model.tag_branch, model.location_branch))
    return scorer + branches, scorer - linears[0].in_features * linears[0].out_features


def rates(pairs: int, fn) -> tuple[float, float]:
    """(pairs per wall second, pairs per process-CPU second) of one call of ``fn``. On a shared machine
    the CPU-time rate is the steadier one: time spent descheduled does not count."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return pairs / (time.perf_counter() - wall), pairs / (time.process_time() - cpu)


def naive_scoring(model, image, lat, lon, vocab, batch) -> None:
    """The original's method: the query repeated once per tag, the whole forward per pair, batched over tags."""
    with torch.no_grad():
        for s in range(0, vocab.shape[0], batch):
            tags = vocab[s : s + batch]
            n = tags.shape[0]
            model(image.expand(n, -1), tags, lat.expand(n), lon.expand(n))


def emulate_bf16(engine: ScoringEngine) -> None:
    """Make ``engine`` (built with dtype="bf16") compute bf16 numerics with fp32 kernels: every hidden
    activation rounded to bf16 (GroupNorm statistics from the rounded input, in fp32), bf16-rounded weights,
    products accumulated in fp32 -- what the native bf16 path computes. The final Linear(last, 1) stays fp32."""
    fast = engine.fast
    layers = list(engine.model.scorer.layers)

    def round16(x: torch.Tensor) -> torch.Tensor:
        return x.bfloat16().float()

    stages = []
    for i in range(1, len(layers) - 1, 3):
        gn, lin = layers[i], layers[i + 2]
        w, b = lin.weight.detach(), lin.bias.detach()
        last = lin.out_features == 1
        w, b = (w, b) if last else (round16(w), round16(b))

        def stage(h, gn=gn, w=w, b=b, last=last):
            x = round16(
                F.group_norm(
                    round16(h) if h.dtype == torch.bfloat16 else h.float(),
                    gn.num_groups,
                    gn.weight.detach(),
                    gn.bias.detach(),
                    gn.eps,
                ).relu_()
            )
            out = F.linear(x, w, b)
            return out if last else round16(out).bfloat16()

        stages.append(stage)
    fast.stages = stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=6_000, help="pairs per throughput run (1 query x this many tags)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved naive/engine runs; the best of each is kept")
    ap.add_argument(
        "--bf16-pairs", type=int, default=512, help="pairs of the bf16 throughput run where the CPU emulates bf16"
    )
    ap.add_argument("--rank-queries", type=int, default=4)
    ap.add_argument("--rank-tags", type=int, default=2_500)
    args = ap.parse_args()
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    use_bf16, why = bf16_verdict(torch.device("cpu"))
    print(f"dtype='auto' verdict: {'bf16' if use_bf16 else 'fp32'} ({why})")

    fp32_gflops = matmul_gflops(torch.float32, 4096)  # again inside the interleaved loop below, best kept
    bf16_rows = 4096 if use_bf16 else 512
    bf16_gflops = matmul_gflops(torch.bfloat16, bf16_rows, repeat=2)

    model = paper_model()
    g = torch.Generator().manual_seed(1)
    vocab = torch.randn(V, E, generator=g)
    images = torch.randn(max(args.rank_queries, 1), E, generator=g)
    lat, lon = torch.rand(images.shape[0], generator=g) * 180 - 90, torch.rand(images.shape[0], generator=g) * 360 - 180
    whole, per_pair = macs_per_pair(model)
    print(
        f"paper model: {whole / 1e6:.2f}M multiply-adds per pair in the forward, {per_pair / 1e6:.2f}M per pair in the engine"
    )

    fp32 = ScoringEngine(model, dtype="fp32", tag_embeddings=vocab)
    t0 = time.perf_counter()
    fp32._vocabulary_block()
    print(f"vocabulary block, V={V:,}: {time.perf_counter() - t0:.1f} s once per vocabulary and weights")

    n = min(args.pairs, V)
    m16 = n if use_bf16 else min(args.bf16_pairs, V)
    fp32.set_vocabulary(vocab[:n])
    int8 = ScoringEngine(model, dtype="int8", tag_embeddings=vocab[:n])
    bf16 = ScoringEngine(model, dtype="bf16", tag_embeddings=vocab[:m16])
    q = (images[:1], lat[:1], lon[:1])
    runs = {
        "naive forward, fp32": (
            n,
            whole,
            lambda: naive_scoring(model, images[0], lat[:1], lon[:1], vocab[:n], fp32.chunk_pairs),
        ),
        "engine fp32": (n, per_pair, lambda: fp32.score_tags(*q, k=10)),
        "engine bf16 + fp32 rescore": (m16, per_pair, lambda: bf16.score_tags(*q, k=10)),
        "engine int8 + fp32 rescore (opt-in)": (n, per_pair, lambda: int8.score_tags(*q, k=10)),
    }
    interleaved = [name for name in runs if use_bf16 or "bf16" not in name]
    naive_scoring(model, images[0], lat[:1], lon[:1], vocab[:256], 256)  # warm-up
    for engine in (fp32, bf16, int8):
        engine.score_tags(*q, k=10)  # warm-up: kernels, the vocabulary block
    best = {name: (0.0, 0.0) for name in runs}
    for _ in range(args.repeat):  # interleaved, best of: the machine is shared
        for name in interleaved:
            pairs, _, fn = runs[name]
            w, c = rates(pairs, fn)
            best[name] = (max(best[name][0], w), max(best[name][1], c))
        fp32_gflops = max(fp32_gflops, matmul_gflops(torch.float32, 4096, repeat=1))
        bf16_gflops = max(bf16_gflops, matmul_gflops(torch.bfloat16, bf16_rows, repeat=1))
    if not use_bf16:  # emulated bf16: once, on few pairs
        best["engine bf16 + fp32 rescore"] = rates(m16, runs["engine bf16 + fp32 rescore"][2])
    print(
        f"matmul F.linear [Mx2048] x [2048x2048], best over the run: fp32 {fp32_gflops:.1f} GFLOP/s (M=4096), "
        f"bf16 {bf16_gflops:.1f} GFLOP/s (M={bf16_rows}) = {bf16_gflops / fp32_gflops:.2f}x fp32"
    )

    naive_wall, naive_cpu = best["naive forward, fp32"]
    print(
        f"\n{'method':36s} {'pairs/s':>8s} {'x naive':>8s} {'pairs/CPU-s':>11s} {'x naive':>8s} {'GFLOP/s':>8s} {'% fp32 peak':>11s} {'% bf16 peak':>11s}"
    )
    for name, (_, macs, _) in runs.items():
        w, c = best[name]
        gf = 2 * macs * w / 1e9
        print(
            f"{name:36s} {w:8.0f} {w / naive_wall:8.2f} {c:11.0f} {c / naive_cpu:8.2f} {gf:8.1f} {100 * gf / fp32_gflops:11.1f} {100 * gf / bf16_gflops:11.1f}"
        )
    print(
        f"(one query; {n:,} pairs per run, best of {args.repeat} interleaved"
        f"{'' if use_bf16 else f'; bf16 (emulated) {m16:,} pairs once'}; GFLOP/s from wall time, "
        f"int8 multiply-adds counted as if fp32)"
    )

    if args.rank_queries > 0:
        t = min(args.rank_tags, V)
        fp32.set_vocabulary(vocab[:t])
        _, ids32 = fp32.score_tags(images, lat, lon, k=10)
        native = use_bf16
        how = "native bf16 kernels" if native else "bf16 numerics emulated in fp32 (native bf16 too slow here)"
        print(f"\nranking vs fp32, {images.shape[0]} queries x {t:,} tags (bf16: {how}):")
        for dtype in ("bf16", "int8"):
            for extra in (0, 32):
                eng = ScoringEngine(model, dtype=dtype, tag_embeddings=vocab[:t], rescore_extra=extra)
                if dtype == "bf16" and not native:
                    emulate_bf16(eng)
                _, ids = eng.score_tags(images, lat, lon, k=10)
                same = sum(set(a.tolist()) == set(b.tolist()) for a, b in zip(ids32, ids))
                label = f"raw {dtype} top-10" if extra == 0 else f"{dtype} + fp32 rescore of top-{10 + extra}"
                print(f"  {label:34s} identical top-10 sets: {same}/{len(ids32)} = {100 * same / len(ids32):.0f}%")
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
