"""Benchmark: simulated-world generation throughput against writing the same bytes plainly.

Generates a world of N photo lines (``locsens.data.world.generate_world``, size "large" scaled to N)
after warming the per-process caches (GeoNames cities, geocoder), then, in the same run, times the
baseline: writing the generated TSV's bytes to a new file plus writing a feature store of the same
shape from one pre-built array. Prints photo lines/s of each and their ratio (the cost of simulating
over the cost of the I/O alone).

    python benchmarks/world.py [--photos 200000] [--feature-dim 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from locsens.data.store import write_feature_store
from locsens.data.world import WorldParams, generate_world, load_cities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200_000)
    ap.add_argument("--feature-dim", type=int, default=512)
    args = ap.parse_args()
    load_cities(WorldParams())  # warm: GeoNames + geocoder tables are loaded once per process
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = generate_world(tmp / "world", "large", seed=0, n_photos=args.photos, feature_dim=args.feature_dim)
        t_world = time.perf_counter() - t0

        t0 = time.perf_counter()
        (tmp / "copy.tsv").write_bytes(paths.tsv_path.read_bytes())
        feats = np.ones((args.photos, args.feature_dim), np.float32)
        ids = np.arange(args.photos, dtype=np.int64)
        blocks = (feats[s : s + 16_384] for s in range(0, args.photos, 16_384))
        write_feature_store(tmp / "copy.h5", photo_id=ids, features=blocks, extractor="baseline")
        t_io = time.perf_counter() - t0
        size_mb = (paths.tsv_path.stat().st_size + paths.features_path.stat().st_size) / 1e6

    print(f"photo lines       {args.photos:,} ({size_mb:,.0f} MB written)")
    print(f"generate_world    {args.photos / t_world:>12,.0f} lines/s  ({t_world:.1f} s)")
    print(f"plain I/O         {args.photos / t_io:>12,.0f} lines/s  ({t_io:.1f} s)")
    print(f"ratio             {t_io / t_world:>12.3f}  (generation speed / plain-write speed)")


if __name__ == "__main__":
    main()
