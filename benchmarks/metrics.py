"""Throughput of the evaluation metrics' hot paths, as ratios against baselines measured in the same run.

1. Location-sensitive P@10 (6 thresholds), vectorised, vs the naive per-query reference loop of
   tests/reference_metrics.py: 20k queries x 11 retrieved over 100k candidates (the reference is
   timed on a subset and both are reported in queries/s; their results are checked equal).
2. Upper bound, vectorised vs the reference (which scans every candidate per query).
3. ranked_topk (exact tie rule) vs plain torch.topk (unspecified tie order), 1k images x 100k tags.

Run: .venv/bin/python benchmarks/metrics.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference_metrics as ref  # noqa: E402

from locsens.metrics.retrieval import (  # noqa: E402
    DEFAULT_THRESHOLDS_KM,
    RetrievalCandidates,
    build_location_queries,
    location_sensitive_precision,
    location_sensitive_upper_bound,
)
from locsens.metrics.tagging import ranked_topk  # noqa: E402

N_CANDIDATES, N_TAGS, N_QUERIES, K = 100_000, 5_000, 20_000, 10


def timed(fn, repeat: int = 3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def world(seed: int = 0):
    rng = np.random.default_rng(seed)
    n_tags = rng.integers(1, 9, N_CANDIDATES)
    indptr = np.concatenate([[0], np.cumsum(n_tags)])
    freq = 1.0 / (np.arange(N_TAGS) + 10.0)  # long tail; the top tag on ~1.6% of tag slots, like YFCC's
    indices = rng.choice(N_TAGS, size=indptr[-1], p=freq / freq.sum())
    cities = np.column_stack([rng.uniform(-60, 70, 300), rng.uniform(-180, 180, 300)])
    home = rng.integers(0, len(cities), N_CANDIDATES)
    lat = np.clip(cities[home, 0] + rng.normal(scale=0.5, size=N_CANDIDATES), -90, 90)
    lon = (cities[home, 1] + rng.normal(scale=0.5, size=N_CANDIDATES) + 180) % 360 - 180
    cand = RetrievalCandidates.from_csr(indptr, indices, N_TAGS, lat, lon)
    queries = build_location_queries(cand, min_query_images=10, seed=seed)
    queries = queries[torch.from_numpy(rng.permutation(len(queries))[:N_QUERIES])]
    # retrieved lists: half carriers of the query tag (so relevance is not trivially zero), half random
    start, length = cand.tag_ptr[queries.tag], cand.tag_ptr[queries.tag + 1] - cand.tag_ptr[queries.tag]
    g = torch.Generator().manual_seed(seed)
    pick = start[:, None] + (torch.rand(len(queries), K + 1, generator=g) * length[:, None]).long()
    random = torch.randint(0, N_CANDIDATES, (len(queries), K + 1), generator=g)
    retrieved = torch.where(torch.arange(K + 1) % 2 == 0, cand.tag_candidates[pick], random)
    dedup = torch.sort(retrieved, 1).values
    ok = ~((dedup[:, 1:] == dedup[:, :-1]).any(1))
    return cand, queries[ok], retrieved[ok], (indptr, indices, lat, lon)


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cand, queries, retrieved, (indptr, indices, lat, lon) = world()
    q = len(queries)
    print(
        f"location-sensitive P@10: {q} queries x {K + 1} retrieved over {N_CANDIDATES} candidates, {len(DEFAULT_THRESHOLDS_KM)} thresholds"
    )

    fast_s, fast = timed(lambda: location_sensitive_precision(retrieved, queries, cand, DEFAULT_THRESHOLDS_KM, K))
    tag_sets = [set(indices[indptr[i] : indptr[i + 1]].tolist()) for i in range(N_CANDIDATES)]
    n_ref = 2_000
    sub = slice(0, n_ref)
    ref_s, slow = timed(
        lambda: ref.location_precision(
            retrieved[sub].tolist(),
            queries.tag[sub].tolist(),
            queries.lat[sub].tolist(),
            queries.lon[sub].tolist(),
            tag_sets,
            lat,
            lon,
            DEFAULT_THRESHOLDS_KM,
            K,
        ),
        repeat=1,
    )
    assert np.allclose(fast[sub].numpy(), np.array(slow)), "vectorised and reference P@10 disagree"
    fast_qps, ref_qps = q / fast_s, n_ref / ref_s
    print(
        f"  vectorised {fast_qps:12,.0f} queries/s   reference loop {ref_qps:10,.0f} queries/s   ratio {fast_qps / ref_qps:8.1f}x"
    )
    print("  mean P@10 (%): " + ", ".join(f"{v:.2f}" for v in (100 * fast.mean(0)).tolist()))

    ub_s, ub = timed(lambda: location_sensitive_upper_bound(queries, cand, DEFAULT_THRESHOLDS_KM, K), repeat=1)
    n_ub = 20
    ub_ref_s, ub_ref = timed(
        lambda: ref.upper_bound(
            queries.tag[:n_ub].tolist(),
            queries.lat[:n_ub].tolist(),
            queries.lon[:n_ub].tolist(),
            tag_sets,
            lat,
            lon,
            DEFAULT_THRESHOLDS_KM,
            K,
        ),
        repeat=1,
    )
    assert np.allclose(ub[:n_ub].numpy(), np.array(ub_ref)), "vectorised and reference upper bound disagree"
    pairs = int((cand.tag_ptr[queries.tag + 1] - cand.tag_ptr[queries.tag]).sum())
    print(f"upper bound: {q} queries, {pairs:,} (query, carrier) distances")
    print(
        f"  vectorised {q / ub_s:12,.0f} queries/s   reference loop {n_ub / ub_ref_s:10,.1f} queries/s   ratio {(q / ub_s) / (n_ub / ub_ref_s):8.1f}x"
    )

    n_img, n_voc = 1_000, 100_000
    scores = torch.randn(n_img, n_voc)
    scores[:, ::7] = 0.0  # many ties
    topk_s, _ = timed(lambda: torch.topk(scores, 50, dim=1))
    ranked_s, _ = timed(lambda: ranked_topk(scores, 50))
    print(f"ranked_topk vs torch.topk: {n_img} images x {n_voc} tags, top-50")
    print(
        f"  ranked_topk {n_img / ranked_s:10,.0f} images/s   torch.topk {n_img / topk_s:10,.0f} images/s   ratio {topk_s / ranked_s:6.2f}x (cost of the exact tie rule)"
    )


if __name__ == "__main__":
    main()
