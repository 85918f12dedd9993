"""Learned-prior (GeoPrior) training step and the place-consistency / neighbour-prior passes of the
evaluation, each as a ratio against its baseline measured in the same run (interleaved repeats).

* training step (photos/s): the presence-only loss over the whole vocabulary (SINR's) vs over the batch's
  tags + ``sampled_tags`` others (reweighted, unbiased), batch 2048, at V = 10,000 (the demo world) and
  V = 100,000 (the paper's vocabulary); forward, backward and the AdamW step.
* kNN prior (images/s): ``NeighbourPrior.prior`` for test locations over 80,000 training photos (the demo
  split), against a plain dense scan (every training photo's distance, ``argpartition``).

Run: .venv/bin/python benchmarks/geo_prior.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from locsens.models.geo_prior import GeoPrior


def step_fn(v: int, sampled: int | None, batch: dict):
    torch.manual_seed(0)
    model = GeoPrior(num_tags=v, sampled_tags=sampled)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        loss = model._loss(batch, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def interleaved(fns: dict, repeat: int) -> dict:
    for fn in fns.values():
        fn()  # warm-up
    best = {name: np.inf for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()
    flags = sorted(set(open("/proc/cpuinfo").read().split()) & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags: {', '.join(flags)}")
    g = torch.Generator().manual_seed(0)
    print("\nGeoPrior training step (photos/s), batch", args.batch)
    print(f"{'V':>8} {'all tags':>10} {'sampled 1024':>13} {'ratio':>7}")
    for v in (10_000, 100_000):
        batch = {
            "lat": torch.rand(args.batch, generator=g) * 140 - 60,
            "lon": torch.rand(args.batch, generator=g) * 360 - 180,
            "target": torch.randint(0, v, (args.batch, 5), generator=g).masked_fill(
                torch.rand(args.batch, 5, generator=g) < 0.2, -1
            ),
        }
        t = interleaved({"all": step_fn(v, None, batch), "sampled": step_fn(v, 1024, batch)}, args.repeat)
        print(
            f"{v:>8} {args.batch / t['all']:>10,.0f} {args.batch / t['sampled']:>13,.0f} {t['all'] / t['sampled']:>6.2f}x"
        )

    from types import SimpleNamespace

    from locsens.geo import unit_vectors
    from locsens.priors import NeighbourPrior

    rng = np.random.default_rng(0)
    n_train, v, n_test = 80_000, 10_000, 2_000
    lengths = rng.integers(1, 9, n_train + n_test)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    ds = SimpleNamespace(
        path="benchmark",
        lat=rng.uniform(-60, 70, n_train + n_test),
        lon=rng.uniform(-180, 180, n_train + n_test),
        tags_indptr=indptr,
        tags_indices=rng.integers(0, v, indptr[-1]),
        num_tags=v,
        split_rows=lambda split: np.arange(n_train) if split == "train" else np.arange(n_train, n_train + n_test),
    )
    prior = NeighbourPrior(ds, "knn", k=100)
    q_lat, q_lon = ds.lat[n_train:], ds.lon[n_train:]
    train_xyz = unit_vectors(ds.lat[:n_train], ds.lon[:n_train])

    def dense_scan():
        for s in range(0, n_test, 256):
            d = unit_vectors(q_lat[s : s + 256], q_lon[s : s + 256]) @ train_xyz.T
            np.argpartition(-d, 100, axis=1)[:, :100]

    t = interleaved({"tree": lambda: prior.prior(q_lat, q_lon), "scan": dense_scan}, max(2, args.repeat // 2))
    print(f"\nkNN prior, {n_test} locations over {n_train} training photos (k = 100, V = {v})")
    print(
        f"  cKDTree + sparse counts: {n_test / t['tree']:,.0f} images/s (the whole prior, [N, V]); "
        f"dense scan: {n_test / t['scan']:,.0f} images/s (the neighbours only); ratio {t['scan'] / t['tree']:.2f}x"
    )


if __name__ == "__main__":
    main()
