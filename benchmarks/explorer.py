"""The explorer's answer after a drag: one photo's top-20 tags re-ranked at a new place, in one run.

Times, for ``--repeats`` (photo, place) pairs drawn with a seed from the test split and the globe:
  * baseline: the model's plain fp32 forward over the whole vocabulary (each (image, tag, place) triplet
    through the whole network, as the original code scores), then top-20;
  * engine: ``Explorer.rank_tags`` in-process (the scoring engine's exact top-20, plus the agnostic list);
  * http: the page's request, ``GET /api/tags`` over a real uvicorn server on 127.0.0.1 (JSON included);
and, for context, a retrieval query over the whole test split and a 2-degree LocSens heat map.
Prints median / p90 milliseconds, the baseline / engine ratio, and whether the 100 ms goal is met.

Run: .venv/bin/python benchmarks/explorer.py --run outputs/demo-demo/locsens_raw [--repeats 40 --dtype auto]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

import numpy as np
import torch


def quantiles(ms: list[float]) -> str:
    return f"median {np.median(ms):7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms"


def main() -> None:
    from locsens.explore.server import BackgroundServer, create_app
    from locsens.explore.session import Explorer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/demo-demo/locsens_raw")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    explorer = Explorer(args.run, dtype=args.dtype)
    ds, method = explorer.ds, explorer.locsens
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(explorer.test_rows, size=args.repeats)
    places = np.column_stack([rng.uniform(-60, 70, args.repeats), rng.uniform(-180, 180, args.repeats)])
    v = ds.num_tags
    print(
        f"run {args.run}: {len(ds)} photos, {len(explorer.test_rows)} test, V = {v} tags; engine dtype "
        f"{method.engine.dtype_used}; torch threads {torch.get_num_threads()}"
    )
    model = method.model.eval()
    tags, ids = method.tag, torch.arange(v)

    def baseline(r, lat, lon):
        with torch.no_grad():
            s = model(method.image[[r]].expand(v, -1), tags, torch.full((v,), lat), torch.full((v,), lon), tag_ids=ids)
            return torch.topk(s, 20).indices

    timings = {"baseline": [], "engine": [], "http": []}
    with BackgroundServer(create_app(explorer)) as server:
        for i, (r, (lat, lon)) in enumerate(zip(rows, places)):
            pid = int(ds.photo_id[r])
            url = f"{server.url}/api/tags?photo={pid}&lat={lat:.3f}&lon={lon:.3f}&k=20"
            calls = {
                "baseline": lambda r=r, lat=lat, lon=lon: baseline(r, lat, lon),
                "engine": lambda pid=pid, lat=lat, lon=lon: explorer.rank_tags(pid, lat, lon, 20),
                "http": lambda url=url: json.loads(urllib.request.urlopen(url).read()),
            }
            for name, call in calls.items():
                t0 = time.perf_counter()
                call()
                if i:  # the first of each is a warm-up (lazy vocabulary block, first request)
                    timings[name].append(1000 * (time.perf_counter() - t0))
        extra = {}
        tag = ds.vocab[int(np.argmax(explorer.test_count))]
        pid = int(ds.photo_id[rows[0]])
        for name, url in (
            ("retrieve (whole test split)", f"/api/retrieve?tag={tag}&lat=48.86&lon=2.35&km=200"),
            ("heat map, 2 degrees, LocSens", f"/api/heatmap?tag={tag}&photo={pid}&step=2"),
        ):
            ms = []
            for _ in range(4):
                t0 = time.perf_counter()
                urllib.request.urlopen(server.url + url).read()
                ms.append(1000 * (time.perf_counter() - t0))
            extra[name] = ms[1:]
    print(f"\nre-rank one photo's top-20 at a new place ({args.repeats - 1} timed, after one warm-up):")
    for name, label in (
        ("baseline", "baseline: plain fp32 forward, every tag"),
        ("engine", "engine: Explorer.rank_tags"),
        ("http", "http: GET /api/tags (the page)"),
    ):
        print(f"  {label:<42s} {quantiles(timings[name])}")
    ratio = np.median(timings["baseline"]) / np.median(timings["engine"])
    print(f"  engine speed-up over the baseline (same run, medians): {ratio:.2f}x")
    p90 = np.percentile(timings["http"], 90)
    print(f"  goal: the page's answer under 100 ms: {'met' if p90 < 100 else 'MISSED'} (p90 {p90:.1f} ms)")
    for name, ms in extra.items():
        print(f"  {name:<42s} {quantiles(ms)}")


if __name__ == "__main__":
    main()
