"""``evaluate(cfg)``: trained models + the dataset store -> the paper's tables, figures and raw predictions.

One run directory per evaluation holds
  results.json      every number, with the resolved config and the git commit
  tables.md         the paper's tables (tagging with / without place names, location-sensitive
                    retrieval with the upper bound, location-agnostic retrieval)
  predictions.h5    the raw predictions behind every number (per test image the top-50 tag ids per
                    method, with and without place names; per retrieval query the top-10 image rows
                    per method), so anyone can recompute every number independently
  figures/*.png     supplementary Fig. 3 and 4, and the qualitative tagging / retrieval figures

Numbers are saved before anything that can fail for other reasons: ``predictions.h5``,
``results.json`` and ``tables.md`` are written (each atomically) as soon as the metrics exist; the
figures and W&B come after, and a failure there leaves the numbers intact (and is reported, exit 1).
``results.json`` records the content id / sha256 of every input (dataset store, embeddings stores,
checkpoints) and the git commit, so a table can always be traced to what produced it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from locsens.artifacts import expand_runs, file_ref, require_made_from
from locsens.checkpointing import MODEL_CLASSES, checkpoint_record
from locsens.config import validate_evaluate_config
from locsens.data.store import STR, DatasetStore, StoreError, atomic_h5, read_identity
from locsens.eval.methods import build_method
from locsens.files import exclusive, git_commit, write_json_atomic
from locsens.metrics.retrieval import (
    LocationSensitivePrecision,
    RetrievalCandidates,
    RetrievalPrecision,
    build_location_queries,
    location_sensitive_upper_bound,
    precision_table,
    threshold_key,
)
from locsens.metrics.tagging import TaggingAccuracy, ground_truth_from_csr, place_name_mask

log = logging.getLogger(__name__)


class EvaluationError(RuntimeError):
    """Nothing to evaluate (an empty test split, no method) or a stage failed; the message says which."""


def _sample(rows: np.ndarray, limit, seed: int) -> np.ndarray:
    if limit is None or limit >= len(rows):
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=int(limit), replace=False))


def evaluate_tagging(methods: dict, ds: DatasetStore, rows: np.ndarray, ks, chunk: int, k_keep: int = 50):
    """Tagging A@k / %pred / %cpred for every method, with and without place names."""
    exclude = place_name_mask(ds.vocab, ds.place_names)
    results, predictions = {}, {}
    for name, method in methods.items():
        with_places = TaggingAccuracy(ds.num_tags, ks=ks)
        omitted = TaggingAccuracy(ds.num_tags, ks=ks, exclude=exclude)
        top_all, top_omit = [], []
        for start in tqdm(range(0, len(rows), chunk), desc=f"tagging {name}", leave=False):
            r = rows[start : start + chunk]
            target = ground_truth_from_csr(ds.tags_indptr, ds.tags_indices, r)
            a, b = method.rank_tags(r, k_keep), method.rank_tags(r, k_keep, exclude=exclude)
            with_places.update(a, target)
            omitted.update(b, target)
            top_all.append(a.int())
            top_omit.append(b.int())
        results[name] = {"with_places": with_places.compute(), "places_omitted": omitted.compute()}
        predictions[name] = (torch.cat(top_all).numpy(), torch.cat(top_omit).numpy())
    return results, predictions


def methods_from_runs(runs, dataset_path) -> dict:
    """Method specs from training run directories (:func:`locsens.artifacts.expand_runs`).

    Each run must have finished (``metrics.json`` names its best checkpoint); what it is comes from
    the checkpoint's own record (model class and the stores it was trained on). A LocSens run is
    scored on the embeddings store it was trained on; an MLC / MCC / HER run is exported into
    ``<run>/embeddings.h5``, a cache keyed on the checkpoint's sha256 and the stores' ids (re-exported
    when the best checkpoint or a store changed).
    """
    from locsens.export import export_embeddings

    dataset_id = read_identity(dataset_path)[0]
    specs = {}
    for run in expand_runs(runs):
        ckpt = run.best_checkpoint()
        record = checkpoint_record(ckpt)
        made_from = record.get("made_from") or {}
        if MODEL_CLASSES[record["model_class"]] == "locsens":
            specs[run.name()] = {
                "kind": "locsens",
                "checkpoint": str(ckpt),
                "embeddings_path": made_from["embeddings"]["path"],
            }
            continue
        require_made_from(
            f"run {run.path} (checkpoint {ckpt})",
            made_from.get("dataset"),
            "dataset store",
            {"id": dataset_id, "path": str(dataset_path)},
            "evaluate it with the dataset store it was trained on",
        )
        cache = run.embeddings_cache
        want = {
            "checkpoint": file_ref(ckpt)["sha256"],
            "dataset": dataset_id,
            "features": read_identity(made_from["features"]["path"])[0],
        }
        if cache.exists():
            got = read_identity(cache)[1]
            have = {
                "checkpoint": (got.get("checkpoint") or {}).get("sha256"),
                "dataset": (got.get("dataset") or {}).get("id"),
                "features": (got.get("features") or {}).get("id"),
            }
            if have != want:
                log.info(
                    "%s is stale (made from %s, the run's best checkpoint and stores are now %s): re-exporting",
                    cache,
                    have,
                    want,
                )
        if not cache.exists() or have != want:
            export_embeddings(ckpt, dataset_path, made_from["features"]["path"], cache, overwrite=True)
        specs[run.name()] = {"kind": "embeddings", "embeddings_path": str(cache)}
    return specs


def build_methods(cfg: DictConfig, ds: DatasetStore) -> dict:
    specs = {name: OmegaConf.to_container(spec, resolve=True) for name, spec in cfg.methods.items() if spec is not None}
    specs.update(methods_from_runs(cfg.runs, cfg.dataset_path))
    if not specs:
        raise EvaluationError("no method to evaluate: every entry of methods is null and runs is empty")
    methods = {}
    for name, spec in specs.items():
        methods[name] = build_method(name, spec, ds, methods)
    return methods


def evaluate_retrieval(methods: dict, ds: DatasetStore, cand: np.ndarray, rcfg: DictConfig, seed: int):
    """Location-agnostic and location-sensitive P@10 over the candidate rows, with the upper bound."""
    k = int(rcfg.k)
    thresholds = [float(t) for t in rcfg.thresholds_km]
    exclude_self = bool(rcfg.exclude_query_image)
    candidates = RetrievalCandidates.from_csr(
        ds.tags_indptr, ds.tags_indices, ds.num_tags, lat=ds.lat, lon=ds.lon, rows=cand
    )
    agn_tags = candidates.query_tags(int(rcfg.min_query_images))
    agnostic, agn_preds = {}, {}
    for name, m in methods.items():
        if hasattr(m, "retrieve") and not m.location_aware and len(agn_tags):
            ids = m.retrieve(agn_tags, None, None, cand, k)
            metric = RetrievalPrecision(candidates, k=k)
            metric.update(ids, agn_tags)
            agnostic[name] = metric.compute()
            agn_preds[name] = ids.numpy().astype(np.int32)

    q = build_location_queries(candidates, min_query_images=int(rcfg.min_query_images), seed=seed)
    if rcfg.max_queries is not None and len(q) > int(rcfg.max_queries):
        keep = np.sort(np.random.default_rng(seed).choice(len(q), int(rcfg.max_queries), replace=False))
        q = q[torch.from_numpy(keep)]
    if len(q) == 0:
        log.warning(
            "no location-sensitive query: no test tag has %d test images; lower retrieval.min_query_images",
            int(rcfg.min_query_images),
        )
    retrieval, ret_preds = {}, {}
    bs = int(rcfg.chunk_queries)
    for name, m in methods.items():
        if not hasattr(m, "retrieve") or len(q) == 0:
            continue
        metric = LocationSensitivePrecision(candidates, thresholds_km=thresholds, k=k, exclude_query_image=exclude_self)
        ids = []
        for s0 in tqdm(range(0, len(q), bs), desc=f"retrieval {name}", leave=False):
            qb = q[s0 : s0 + bs]
            got = m.retrieve(qb.tag, qb.lat, qb.lon, cand, k + int(exclude_self))
            metric.update(got, qb)
            ids.append(got)
        retrieval[name] = metric.compute()
        ret_preds[name] = torch.cat(ids).numpy().astype(np.int32)
    if len(q):
        ub = location_sensitive_upper_bound(
            q, candidates, thresholds_km=thresholds, k=k, exclude_query_image=exclude_self
        )
        retrieval = {"upper_bound": precision_table(ub, thresholds), **retrieval}
    return {
        "candidates": candidates,
        "queries": q,
        "agnostic_tags": agn_tags,
        "agnostic": agnostic,
        "agnostic_predictions": agn_preds,
        "location_sensitive": retrieval,
        "location_sensitive_predictions": ret_preds,
        "thresholds": thresholds,
    }


def evaluate(cfg: DictConfig) -> dict:
    """Run the whole evaluation described by ``cfg`` (conf/evaluate.yaml); returns results.json's content."""
    cfg = validate_evaluate_config(cfg)  # typed values, unknown keys, a missing dataset store: fail before any work
    out_dir = Path(cfg.output_dir)
    with exclusive(out_dir, "an evaluation"):
        return _evaluate(cfg, out_dir)


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    torch.manual_seed(int(cfg.seed))
    ds = DatasetStore(cfg.dataset_path)
    test_rows = _sample(ds.split_rows("test"), cfg.limit_test_images, int(cfg.seed))
    if len(test_rows) == 0:
        raise EvaluationError(
            f"{cfg.dataset_path}: the test split is empty; nothing to evaluate (ingest with a non-empty ingest.split.test)"
        )
    methods = build_methods(cfg, ds)

    ks = tuple(int(k) for k in cfg.tagging.ks)
    tagging, tag_preds = evaluate_tagging(methods, ds, test_rows, ks, int(cfg.chunk_images), max(50, max(ks)))
    rcfg = cfg.retrieval
    # candidates: the tagging images, or a larger seeded sample of the test split (retrieval costs N pairs
    # a query, tagging V pairs an image: retrieval.limit_candidates lets the two be sized separately)
    cand = (
        test_rows
        if rcfg.get("limit_candidates") is None
        else _sample(ds.split_rows("test"), rcfg.limit_candidates, int(cfg.seed))
    )
    ret = evaluate_retrieval(methods, ds, cand, rcfg, int(cfg.seed))
    thresholds = ret["thresholds"]
    results = {
        "config": resolved_config(cfg, out_dir),
        "git_commit": git_commit(),
        "inputs": {
            "dataset": {"id": ds.content_id, "path": str(cfg.dataset_path)},
            "methods": {name: getattr(m, "lineage", {}) for name, m in methods.items()},
        },
        "n_test_images": int(len(test_rows)),
        "n_retrieval_candidates": int(len(cand)),
        "n_location_queries": int(len(ret["queries"])),
        "n_agnostic_queries": int(len(ret["agnostic_tags"])),
        "tagging": tagging,
        "location_sensitive_retrieval": ret["location_sensitive"],
        "location_agnostic_retrieval": ret["agnostic"],
        "thresholds_km": [t if math.isfinite(t) else "inf" for t in thresholds],
        "threshold_keys": [threshold_key(t) for t in thresholds],
        "figures": [],
    }
    tables = save_numbers(out_dir, results, ds, test_rows, tag_preds, ret, cand)
    print(tables)
    save_reports(cfg, out_dir, results, methods, ds, ret)
    return results


def save_numbers(out_dir: Path, results: dict, ds: DatasetStore, test_rows, tag_preds, ret: dict, cand) -> str:
    """predictions.h5, results.json and tables.md, each atomically: everything a figure could cost."""
    from locsens.eval.report import write_tables

    _write_predictions(
        out_dir / "predictions.h5",
        ds,
        test_rows,
        tag_preds,
        ret["queries"],
        cand,
        ret["location_sensitive_predictions"],
        ret["agnostic_tags"],
        ret["agnostic_predictions"],
    )
    write_json_atomic(out_dir / "results.json", results)
    return write_tables(out_dir / "tables.md", results)


def save_reports(cfg: DictConfig, out_dir: Path, results: dict, methods: dict, ds: DatasetStore, ret: dict) -> None:
    """Figures (then results.json again, listing them) and W&B; the numbers are already on disk."""
    from locsens.eval.report import write_figures

    try:
        results["figures"] = write_figures(
            out_dir / "figures",
            results,
            methods,
            ds,
            ret["queries"],
            ret["candidates"],
            ret["location_sensitive_predictions"],
            ret["agnostic_tags"],
            ret["agnostic_predictions"],
        )
        write_json_atomic(out_dir / "results.json", results)
        wandb_cfg = cfg.get("wandb")
        if (
            wandb_cfg is not None and wandb_cfg.enabled
        ):  # optional: scalars, tables and figures to W&B (locsens.tracking)
            from locsens.tracking import log_evaluation

            log_evaluation(results, out_dir, project=wandb_cfg.project, entity=wandb_cfg.entity, mode=wandb_cfg.mode)
    except Exception as e:
        raise EvaluationError(
            f"the numbers are saved ({out_dir / 'results.json'}, tables.md, predictions.h5), but writing "
            f"the figures or logging to W&B failed: {e}"
        ) from e


def resolved_config(cfg: DictConfig, out_dir: Path) -> dict:
    """The config as plain values (also outside @hydra.main, where hydra: interpolations cannot resolve)."""
    cfg = cfg.copy()
    cfg.output_dir = str(out_dir)
    if "paths" in cfg and "output_dir" in cfg.paths:
        cfg.paths.output_dir = str(out_dir)
    return OmegaConf.to_container(cfg, resolve=True)


def _write_predictions(path, ds, test_rows, tag_preds, q, cand, ret_preds, agn_tags, agn_preds) -> None:
    """Raw predictions in HDF5 (ids are vocabulary ids and dataset rows; photo ids included)."""
    with atomic_h5(path, "locsens.predictions", overwrite=True) as f:
        f.attrs["dataset_id"] = ds.content_id
        f.create_dataset("vocab", data=np.array(ds.vocab, dtype=object), dtype=STR)
        t = f.create_group("tagging")
        t.create_dataset("rows", data=test_rows)
        t.create_dataset("photo_id", data=ds.photo_id[test_rows])
        gt = ground_truth_from_csr(ds.tags_indptr, ds.tags_indices, test_rows).numpy()
        t.create_dataset("ground_truth", data=gt.astype(np.int32))  # [N, T] vocabulary ids, -1 padding
        t.create_dataset("place_name_mask", data=place_name_mask(ds.vocab, ds.place_names).numpy())
        for name, (a, b) in tag_preds.items():
            t.create_dataset(f"{name}/top50", data=a)
            t.create_dataset(f"{name}/top50_places_omitted", data=b)
        r = f.create_group("location_sensitive_retrieval")
        r.create_dataset("candidate_rows", data=cand)
        for key in ("tag", "lat", "lon", "candidate", "row"):
            r.create_dataset(f"queries/{key}", data=getattr(q, key).numpy())
        for name, ids in ret_preds.items():
            r.create_dataset(f"{name}/top_rows", data=cand[ids.clip(min=0)] * (ids >= 0) - (ids < 0))
        a = f.create_group("location_agnostic_retrieval")
        a.create_dataset("query_tags", data=agn_tags.numpy())
        for name, ids in agn_preds.items():
            a.create_dataset(f"{name}/top_rows", data=cand[ids.clip(min=0)] * (ids >= 0) - (ids < 0))


__all__ = [
    "EvaluationError",
    "StoreError",
    "build_methods",
    "evaluate",
    "evaluate_retrieval",
    "evaluate_tagging",
    "methods_from_runs",
]
