"""Data preparation: raw YFCC100M-format metadata -> the validated HDF5 stores of a world directory.

``prepare(cfg)`` builds ``<paths.data_dir>/<world>/`` (layout in :mod:`locsens.artifacts`)::

    yfcc100m_dataset.tsv   (simulated world only) the raw metadata, real YFCC100M format
    features.h5            image features keyed by photo id (locsens.features; for real data a link)
    ground_truth.json      (simulated world only) the mechanisms' ground truth
    dataset.h5             the ingested dataset store (locsens.dataset), paired with features.h5

The world directory changes as one unit:

1. Every input is checked before any work: the metadata files exist and are not empty, the feature
   store is a complete ``locsens.features`` store, and its photo ids overlap those of the first
   metadata lines (a wrong ``source.features`` is named at once, not after hours of parsing).
2. The new files are built under temporary names (``.build.tmp-<pid>/``) and renamed into place at
   the end, ``dataset.h5`` last. The dataset store records the content id of the feature store it is
   paired with, its inputs and the ingest config and source it was made with.
3. A plain rerun reuses the pair only after checking it (ids joined, ingest config and source as now
   requested, inputs unchanged, the link's target); a mismatch is refused, naming what differs.
   A run killed at any moment leaves no file under a final name that a rerun would take for
   finished, so a failed run never blocks its own rerun; temporary files of dead runs are removed.

Training only ever reads the prepared stores; it never parses raw metadata.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from locsens.artifacts import WorldLayout
from locsens.config import validate_prepare_config
from locsens.data.store import VERIFY_MAX_BYTES, DatasetStore, FeatureStore, StoreError, read_identity
from locsens.files import exclusive, file_sha256, remove_stale_temps, require_file, temp_dir
from locsens.metrics.tagging import place_name_mask

OVERLAP_SAMPLE = 20_000  # kept photos of the first metadata file whose ids must meet the feature store's


class PrepareError(ValueError):
    """The world directory cannot be (re)used or built as asked; the message names what and how to fix it."""


def requested_source(cfg: DictConfig) -> dict:
    """What the stores must be made from, as recorded in (and compared with) the dataset store."""
    src = cfg.source
    if src.kind == "world":
        from locsens.data.world import generator_identity

        return {
            "kind": "world",
            "size": str(src.size),
            "seed": int(cfg.seed),
            "n_photos": src.n_photos,
            "feature_dim": int(src.feature_dim),
            "generator": generator_identity(),  # a world made by another version of world.py is not this one
        }
    return {
        "kind": "yfcc",
        "tsv": [str(Path(p).resolve()) for p in src.tsv],
        "features": str(Path(src.features).resolve()),
    }


def ingest_options(cfg: DictConfig) -> dict:
    ing = cfg.ingest
    return dict(
        vocab_size=ing.vocab_size,
        drop_top=ing.drop_top,
        min_tags=ing.min_tags,
        max_tags=ing.max_tags,
        wordlist=ing.wordlist,
        split=OmegaConf.to_container(ing.split),
        seed=int(cfg.seed),
        dedupe_tags=ing.dedupe_tags,
    )


def prepare(cfg: DictConfig) -> dict:
    """Build (or verify and reuse) the stores of ``cfg.world``; returns a summary dict."""
    cfg = validate_prepare_config(cfg)
    dataset_path, features_path = Path(cfg.dataset_path), Path(cfg.features_path)
    root = dataset_path.parent
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root, "prepare"):
        remove_stale_temps(root)
        source = requested_source(cfg)
        if cfg.source.kind == "yfcc":
            check_yfcc_inputs(cfg)
        if dataset_path.exists() and not cfg.overwrite:
            verify_pair(dataset_path, features_path, source, ingest_options(cfg))
            print(
                f"[prepare] {dataset_path} and {features_path} exist and match the request: reusing them (overwrite=true rebuilds)"
            )
            return summarise(dataset_path, features_path)
        build(cfg, dataset_path, features_path, source)
        return summarise(dataset_path, features_path)


def check_yfcc_inputs(cfg: DictConfig) -> None:
    """Fail before the long parse: missing or empty files, a bad feature store, ids that never meet."""
    from locsens.data.yfcc import YfccReader

    for p in cfg.source.tsv:
        require_file(p, "source.tsv", "a YFCC100M metadata file (.tsv, .bz2 or .gz)")
        if Path(p).stat().st_size == 0:
            raise PrepareError(f"source.tsv: {p} is empty (0 bytes)")
    features = FeatureStore(cfg.source.features)  # validates: kind, version, complete, unique ids
    reader = YfccReader(cfg.source.tsv[0], progress=False)
    first = np.array([photo.photo_id for photo in itertools.islice(reader, OVERLAP_SAMPLE)], dtype=np.int64)
    if len(first) == 0:
        raise PrepareError(
            f"source.tsv: {cfg.source.tsv[0]} has no photo with user tags and a location in "
            f"{reader.stats.lines:,} lines ({dict(reader.stats.reasons)}); is it a yfcc100m_dataset file?"
        )
    found = (features.rows_for(first) >= 0).sum()
    if found == 0:
        raise PrepareError(
            f"source.features: none of the first {len(first):,} kept photo ids of {cfg.source.tsv[0]} "
            f"(e.g. {first[:3].tolist()}) has valid features in {cfg.source.features} (ids like "
            f"{features.photo_id[:3].tolist()}); is it the feature store of these photos?"
        )


def current_ingest_form(ingest: dict) -> dict:
    """An ingest config as recorded by an older locsens in today's form: ``split_by_user`` became
    ``split.by`` (random | user | cell), absent meaning random."""
    ingest = dict(ingest)
    by_user = ingest.pop("split_by_user", False)
    split = dict(ingest.get("split") or {})
    split.setdefault("by", "user" if by_user else "random")
    split.setdefault("cell_resolution", 2)
    return {**ingest, "split": split}


def verify_pair(dataset_path: Path, features_path: Path, source: dict, ingest: dict) -> None:
    """Refuse to reuse a dataset / feature store pair that is not exactly what is now requested."""
    fix = "pass overwrite=true to rebuild the world directory"
    if not features_path.exists():
        raise PrepareError(f"{dataset_path} exists but {features_path} does not; {fix}")
    try:
        dataset_id, made_from = read_identity(dataset_path)
        features_id = read_identity(features_path)[0]
        DatasetStore(dataset_path)
        FeatureStore(features_path)
    except (StoreError, OSError) as e:
        raise PrepareError(f"the stores of {dataset_path.parent} cannot be reused: {e}; {fix}") from None
    problems = []
    paired = (made_from.get("features") or {}).get("id")
    if paired != features_id:
        problems.append(
            f"{dataset_path.name} was built with feature store {str(paired)[:12]} but {features_path.name} is "
            f"{features_id[:12]} (a rebuild was interrupted between its two files?)"
        )
    if made_from.get("source") != source:
        problems.append(f"it was made from source {made_from.get('source')}, now {source} is requested")
    recorded_ingest = current_ingest_form(
        {k: v for k, v in (made_from.get("ingest_config") or {}).items() if k != "inputs"}
    )
    if recorded_ingest != ingest:
        diff = sorted(k for k in set(recorded_ingest) | set(ingest) if recorded_ingest.get(k) != ingest.get(k))
        problems.append(
            "the ingest config differs in "
            + ", ".join(f"{k} ({recorded_ingest.get(k)!r} -> {ingest.get(k)!r})" for k in diff)
        )
    for entry in made_from.get("inputs") or []:
        p = dataset_path.parent / entry["path"]  # relative paths: inside the world directory
        if not p.exists():
            problems.append(f"its input {p} no longer exists")
        elif p.stat().st_size != entry["size"] or p.stat().st_mtime_ns != entry.get("mtime_ns", p.stat().st_mtime_ns):
            problems.append(f"its input {p} changed since (size or modification time)")
        elif p.stat().st_size <= VERIFY_MAX_BYTES and file_sha256(p) != entry.get("sha256"):
            problems.append(f"its input {p} changed since (its sha256 is not the one recorded)")
    if source["kind"] == "yfcc" and features_path.resolve() != Path(source["features"]):
        problems.append(
            f"{features_path} links to {features_path.resolve()}, not to source.features={source['features']}"
        )
    if problems:
        raise PrepareError(
            f"{dataset_path.parent} holds stores that do not match this request: " + "; ".join(problems) + f"; {fix}"
        )


def build(cfg: DictConfig, dataset_path: Path, features_path: Path, source: dict) -> None:
    """Build the pair under temporary names in a build folder, then rename it into place (dataset last)."""
    from locsens.data.ingest import describe_input, ingest

    with temp_dir(dataset_path.parent / "build") as build_dir:  # .build.tmp-<pid>/, removed whatever happens
        made_from = {"source": source}
        moves: list[tuple[Path, Path]] = []
        if cfg.source.kind == "world":
            from locsens.data.world import generate_world

            paths = generate_world(
                build_dir,
                size=str(cfg.source.size),
                seed=int(cfg.seed),
                n_photos=cfg.source.n_photos,
                feature_dim=int(cfg.source.feature_dim),
            )
            world = WorldLayout(dataset_path.parent)
            tsv_paths = [paths.tsv_path]
            moves += [
                (paths.tsv_path, world.tsv_path),
                (paths.ground_truth_path, world.ground_truth_path),
                (paths.features_path, features_path),
            ]
            # relative to the world directory (it may be moved as a whole); os.replace keeps the mtime
            made_from["inputs"] = [{**describe_input(paths.tsv_path), "path": paths.tsv_path.name}]
            features_id = read_identity(paths.features_path)[0]
        else:
            tsv_paths = [Path(p) for p in cfg.source.tsv]
            link = build_dir / "features.h5"
            link.symlink_to(Path(cfg.source.features).resolve())
            moves.append((link, features_path))
            features_id = read_identity(cfg.source.features)[0]
        made_from["features"] = {"id": features_id, "path": str(features_path)}
        options = ingest_options(cfg)
        built = build_dir / dataset_path.name
        ingest(tsv_paths, built, **options, strict=bool(cfg.ingest.strict), made_from=made_from)
        for src, dst in moves:
            os.replace(src, dst)
        os.replace(built, dataset_path)


def summarise(dataset_path, features_path) -> dict:
    """Validate both stores, print what was built; no photo with features is an error."""
    ds = DatasetStore(dataset_path)
    fs = FeatureStore(features_path)
    rows = fs.rows_for(ds.photo_id)
    n_missing = int((rows < 0).sum())
    if n_missing == len(ds):
        raise PrepareError(
            f"none of the {len(ds):,} photos of {dataset_path} has valid features in {features_path}; "
            "the two stores do not belong together"
        )
    n_tags = int(ds.tags_indptr[-1])
    with_place = ds.rows_with_any(place_name_mask(ds.vocab, ds.place_names).numpy())
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
        "images without features": n_missing,
        "dataset id": ds.content_id[:12],
        "features id": fs.content_id[:12],
    }
    width = max(len(k) for k in summary)
    print("\nPrepared stores")
    for k, v in summary.items():
        print(f"  {k:<{width}}  {v}")
    if n_missing:
        print(f"  warning: {n_missing:,} photos have no valid features; training drops them")
    return summary
