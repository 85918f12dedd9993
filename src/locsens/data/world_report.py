"""Calibration report: a prepared world's data statistics beside YFCC100M's (the paper's figures).

    python -m locsens.data.world_report world=demo [paths.data_dir=...] [out=report.json]

Reads the world's prepared dataset store (``python prepare.py world=...`` first) and prints one table:
tags per image, the share of images with a place name (among their vocabulary tags, and among their
raw tags when the store's inputs are at hand), how thin the town statistics are, and the
global / country / town frequency baselines' A@1 / A@10 / A@50 with place names and with place names
omitted, computed by the project's own evaluation (``locsens.eval.pipeline.evaluate_tagging`` over
every test image), each beside the paper's value and the difference. The baselines are properties of
the data, not of a model, so this is what calibrates a simulated world (``locsens.data.world``).
``out=`` also writes the numbers as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from locsens.data.store import DatasetStore
from locsens.metrics.tagging import place_name_mask

# YFCC100M as the paper reports it (../shared/reference/locsens-paper-facts.md): main text (tags per
# image, place-name share), main Table 1 (global frequency), supplementary Tables 1 and 2.
PAPER = {
    "tags per image": 4.25,
    "images with a place name (%)": 78.0,
    "images with a place name in their raw tags (%)": 78.0,
    "global_frequency A@1": 1.82,
    "global_frequency A@10": 13.45,
    "country_frequency A@1": 28.05,
    "country_frequency A@10": 46.63,
    "country_frequency A@50": 63.14,
    "town_frequency A@1": 51.41,
    "town_frequency A@10": 65.49,
    "town_frequency A@50": 71.05,
    "country_frequency A@1, places omitted": 3.80,
    "country_frequency A@10, places omitted": 17.21,
    "country_frequency A@50, places omitted": 41.60,
    "town_frequency A@1, places omitted": 16.97,
    "town_frequency A@10, places omitted": 34.95,
    "town_frequency A@50, places omitted": 47.53,
}
LEVELS = ("global", "country", "town")
KS = (1, 10, 50)


def data_statistics(ds: DatasetStore) -> dict[str, float]:
    """Tags per image, place-name share, vocabulary and how many photos the test images' towns have."""
    per_image = np.diff(ds.tags_indptr)
    is_place = place_name_mask(ds.vocab, ds.place_names).numpy()
    with_place = ds.rows_with_any(is_place)
    only_place = ~ds.rows_with_any(~is_place)
    train, test = ds.split == 0, ds.split == 2
    town = ds.place_index["town"]
    train_per_town = np.bincount(town[train & (town >= 0)], minlength=len(ds.places["town"]))
    test_town_photos = np.where(town[test] >= 0, train_per_town[np.maximum(town[test], 0)], 0)
    tag_count = ds.tag_counts()
    # how much of a test image's town statistics its own user made (a town frequency that memorises users)
    n_users = len(ds.users) + 1
    key = np.where(town >= 0, town, len(ds.places["town"])).astype(np.int64) * n_users + ds.user_index
    pair_keys, pair_counts = np.unique(key[train], return_counts=True)
    at = np.clip(np.searchsorted(pair_keys, key[test]), 0, max(len(pair_keys) - 1, 0))
    own = np.where(len(pair_keys) and (pair_keys[at] == key[test]), pair_counts[at] if len(pair_keys) else 0, 0)
    own_share = own / np.maximum(test_town_photos, 1)
    return {
        "images": float(len(ds)),
        "vocabulary": float(ds.num_tags),
        "tags per image": float(per_image.mean()),
        "images with a place name (%)": 100 * float(with_place.mean()),
        "images with only place names (%)": 100 * float(only_place.mean()),
        "vocabulary tags used by < 5 images (%)": 100 * float((tag_count < 5).mean()),
        "towns with training photos": float((train_per_town > 0).sum()),
        "training photos per town, median": float(np.median(train_per_town[train_per_town > 0])),
        "test images in towns with < 50 training photos (%)": 100 * float((test_town_photos < 50).mean()),
        "test images whose town's training photos are mostly their own user's (%)": 100
        * float(((own_share > 0.5) & (test_town_photos > 0)).mean()),
        "users": float(len(ds.users)),
    }


RAW_SCAN_MAX_BYTES = 2 << 30  # the raw-tag statistic reads the inputs: skipped beyond this (full YFCC)


def raw_place_share(ds: DatasetStore) -> float | None:
    """% of the store's images whose RAW user tags (before the vocabulary cut) hold a place name: the
    vocabulary drops rare place names (villages seen once), so this is the share users actually wrote.
    Reads the inputs the store records (paths inside its directory); None when they are gone or large."""
    from locsens.data.compressed import open_input
    from locsens.data.tags import normalise_tag, split_user_tags

    inputs = [ds.path.parent / e["path"] for e in ds.made_from.get("inputs") or [] if e.get("path")]
    if not inputs or not all(p.exists() for p in inputs) or sum(p.stat().st_size for p in inputs) > RAW_SCAN_MAX_BYTES:
        return None
    places, kept = set(ds.place_names), set(ds.photo_id.tolist())
    seen = with_place = 0
    for path in inputs:
        with open_input(path) as fh:
            for raw in fh:
                cols = raw.decode("utf-8", "replace").split("\t")
                if len(cols) < 11 or not cols[1].isdigit() or int(cols[1]) not in kept:
                    continue
                seen += 1
                with_place += bool({normalise_tag(t) for t in split_user_tags(cols[10])} & places)
    return 100 * with_place / seen if seen else None


def frequency_baselines(ds: DatasetStore, chunk: int = 4096) -> dict[str, float]:
    """Global / country / town frequency A@1/10/50 over every test image, with and without place names."""
    from locsens.eval.methods import FrequencyMethod
    from locsens.eval.pipeline import evaluate_tagging

    methods = {f"{level}_frequency": FrequencyMethod(f"{level}_frequency", ds, level) for level in LEVELS}
    rows = np.flatnonzero(ds.split == 2)
    if len(rows) == 0:
        raise ValueError(f"{ds.path}: the test split is empty; nothing to report")
    results, _ = evaluate_tagging(methods, ds, rows, KS, chunk)
    out = {}
    for name, parts in results.items():
        for part, suffix in (("with_places", ""), ("places_omitted", ", places omitted")):
            for k in KS:
                out[f"{name} A@{k}{suffix}"] = float(parts[part][f"A@{k}"])
    return out


def report(dataset_path: str | Path) -> dict[str, float]:
    """Every statistic of the report for one prepared dataset store."""
    ds = DatasetStore(dataset_path)
    stats = data_statistics(ds)
    raw = raw_place_share(ds)
    if raw is not None:  # beside the vocabulary-tag share
        items = list(stats.items())
        at = [k for k, _ in items].index("images with a place name (%)") + 1
        stats = dict(items[:at] + [("images with a place name in their raw tags (%)", raw)] + items[at:])
    return {**stats, **frequency_baselines(ds)}


def format_report(stats: dict[str, float], title: str = "") -> str:
    """A markdown table: statistic | this world | YFCC100M (paper) | difference."""
    lines = [f"#### {title}", ""] if title else []
    lines += ["| statistic | world | YFCC100M (paper) | world - paper |", "|---|---|---|---|"]
    for key, value in stats.items():
        paper = PAPER.get(key)
        shown = f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"
        diff = "" if paper is None else f"{value - paper:+.2f}"
        lines.append(f"| {key} | {shown} | {'' if paper is None else f'{paper:.2f}'} | {diff} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``world=... [paths.*=...] [out=report.json]``: print the report (and write it as JSON). Bad input
    exits non-zero with one line naming it; an existing ``out`` file is never replaced."""
    from hydra.errors import HydraException

    from locsens.config import ConfigError, compose, validate_prepare_config
    from locsens.data.store import StoreError
    from locsens.files import write_text_atomic

    out = [a.split("=", 1)[1] for a in argv if a.startswith("out=")]
    overrides = [a for a in argv if not a.startswith("out=")]
    try:
        cfg = validate_prepare_config(compose("prepare", overrides))
        path = Path(cfg.dataset_path)
        if not path.exists():
            raise SystemExit(f"{path} does not exist: prepare the world first (python prepare.py world={cfg.world})")
        if out and Path(out[0]).exists():
            raise SystemExit(f"out={out[0]} already exists: remove it or choose another path")
        if out:  # refuse an unwritable destination before the work, not after
            Path(out[0]).parent.mkdir(parents=True, exist_ok=True)
        stats = report(path)
        if out:  # the numbers first, then the table
            payload = {"dataset": str(path), "world": stats, "paper": PAPER}
            write_text_atomic(out[0], json.dumps(payload, indent=1) + "\n")
    except (HydraException, ConfigError, StoreError, OSError) as e:
        raise SystemExit(f"world_report: {e}") from None
    print(format_report(stats, f"world {cfg.world} ({path}) beside YFCC100M"))
    if out:
        print(f"wrote {out[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
