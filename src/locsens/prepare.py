"""Data preparation: raw YFCC100M-format metadata -> validated HDF5 stores.

``prepare(cfg)`` builds ``<paths.data_dir>/<world>/``::

    yfcc100m_dataset.tsv   (simulated world only) the raw metadata, real YFCC100M format
    features.h5            image features keyed by photo id (locsens.features)
    ground_truth.json      (simulated world only) the mechanisms' ground truth
    dataset.h5             the ingested dataset store (locsens.dataset)

Training only ever reads the prepared stores; it never parses raw metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from locsens.data.store import DatasetStore, FeatureStore


def prepare(cfg: DictConfig) -> dict:
    """Build (or reuse) the stores of ``cfg.world``; returns a summary dict."""
    out_dir = Path(cfg.paths.data_dir) / str(cfg.world)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_path = out_dir / "dataset.h5"
    features_path = out_dir / "features.h5"
    if dataset_path.exists() and features_path.exists() and not cfg.overwrite:
        print(f"[prepare] {dataset_path} exists: reusing it (overwrite=true rebuilds)")
    else:
        source = cfg.source
        if source.kind == "world":
            from locsens.data.world import generate_world

            paths = generate_world(out_dir, size=str(source.size), seed=int(cfg.seed), n_photos=source.n_photos,
                                   feature_dim=int(source.feature_dim), overwrite=bool(cfg.overwrite))
            tsv_paths = [paths.tsv]
        elif source.kind == "yfcc":
            tsv_paths = [Path(p) for p in source.tsv]
            if source.features is None:
                raise ValueError("source.features: path to a locsens.features store is required for real YFCC data "
                                 "(make one with extract_features.py)")
            if features_path.exists() and not cfg.overwrite:
                raise FileExistsError(f"{features_path} exists; pass overwrite=true to relink it")
            tmp = features_path.with_name(".features.h5.link")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(Path(source.features).resolve())
            os.replace(tmp, features_path)
        else:
            raise ValueError(f"source.kind: expected 'world' or 'yfcc', got {source.kind!r}")

        from locsens.data.ingest import ingest

        ing = cfg.ingest
        split = {k: (float(v) if float(v) < 1 else int(v)) for k, v in ing.split.items()}
        ingest(tsv_paths, dataset_path, vocab_size=int(ing.vocab_size), drop_top=int(ing.drop_top),
               min_tags=int(ing.min_tags), max_tags=int(ing.max_tags), wordlist=ing.wordlist, split=split,
               seed=int(cfg.seed), split_by_user=bool(ing.split_by_user), strict=bool(ing.strict),
               overwrite=bool(cfg.overwrite))
    return summarise(dataset_path, features_path)


def summarise(dataset_path, features_path) -> dict:
    """Validate both stores and print what was built."""
    ds = DatasetStore(dataset_path)
    fs = FeatureStore(features_path)
    rows = fs.rows_for(ds.photo_id)
    n_tags = int(ds.tags_indptr[-1])
    index = {t: i for i, t in enumerate(ds.vocab)}
    is_place = np.zeros(ds.num_tags, bool)
    is_place[[index[p] for p in ds.place_names if p in index]] = True
    with_place = np.zeros(len(ds), bool)
    np.logical_or.at(with_place, np.repeat(np.arange(len(ds)), np.diff(ds.tags_indptr)), is_place[ds.tags_indices])
    summary = {
        "dataset": str(dataset_path),
        "features": str(features_path),
        "images": len(ds),
        "train/val/test": [int((ds.split == i).sum()) for i in range(3)],
        "vocabulary": ds.num_tags,
        "tags per image": round(float(n_tags) / max(len(ds), 1), 2),
        "images with a place-name tag (%)": round(100 * float(with_place.mean()), 1),
        "towns/regions/countries/continents": [len(ds.places[k]) for k in ("town", "region", "country", "continent")],
        "feature dim": fs.dim,
        "images without features": int((rows < 0).sum()),
    }
    width = max(len(k) for k in summary)
    print("\nPrepared stores")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v}")
    return summary

