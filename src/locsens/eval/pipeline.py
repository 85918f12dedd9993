"""``evaluate(cfg)``: trained models + the dataset store -> the paper's tables, figures and raw predictions.

One run directory per evaluation holds
  results.json      every number, with the resolved config and the git commit
  tables.md         the paper's tables (tagging with / without place names, location-sensitive
                    retrieval with the upper bound, location-agnostic retrieval)
  predictions.h5    the raw predictions behind every number (per test image the top-50 tag ids per
                    method, with and without place names; per retrieval query the top-10 image rows
                    per method), so anyone can recompute every number independently
  figures/*.png     supplementary Fig. 3 and 4, and the qualitative tagging / retrieval figures
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from locsens.config import validate_evaluate_config
from locsens.data.store import STR, DatasetStore, atomic_h5
from locsens.eval.methods import build_method
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


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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


def methods_from_runs(runs) -> dict:
    """Method specs from training run directories; a multirun directory expands to its runs.

    A run directory holds ``.hydra/config.yaml`` (written by train.py), ``checkpoints/`` and
    ``metrics.json`` (whose ``best_checkpoint`` is used). A LocSens run reads the embeddings it was
    trained on (``data.embeddings_path``); an MLC / MCC / HER run is exported once into
    ``<run>/embeddings.h5`` and evaluated from it. Named run directories name the method; multirun jobs
    (``0``, ``1``, ...) are named after the task and what the sweep changed.
    """
    from locsens.export import export_embeddings

    specs = {}
    for run in runs or []:
        run = Path(run)
        found = [run] if (run / ".hydra" / "config.yaml").exists() else sorted(p.parent.parent for p in run.glob("*/.hydra/config.yaml"))
        if not found:
            raise FileNotFoundError(f"runs: {run} is neither a run directory (no .hydra/config.yaml) nor a multirun directory")
        for r in found:
            cfg = OmegaConf.load(r / ".hydra" / "config.yaml")
            overrides = OmegaConf.load(r / ".hydra" / "overrides.yaml") if (r / ".hydra" / "overrides.yaml").exists() else []
            ckpt = _best_checkpoint(r)
            if not r.name.isdigit():
                name = r.name
            else:
                tail = ",".join(str(o) for o in overrides if not str(o).startswith(("paths.", "world=", "trainer", "logger", "hydra")))
                name = str(cfg.get("task_name", r.name)) + (f"[{tail}]" if tail else f"#{r.name}")
            if "embeddings_path" in cfg.data:
                specs[name] = {"kind": "locsens", "checkpoint": str(ckpt), "embeddings": str(cfg.data.embeddings_path)}
            else:
                out = r / "embeddings.h5"
                if not out.exists():
                    export_embeddings(ckpt, cfg.data.dataset_path, cfg.data.features_path, out)
                specs[name] = {"kind": "embeddings", "path": str(out)}
    return specs


def _best_checkpoint(run: Path) -> Path:
    metrics = run / "metrics.json"
    if metrics.exists():
        best = json.loads(metrics.read_text()).get("best_checkpoint")
        if best and Path(best).exists():
            return Path(best)
    ckpts = sorted((run / "checkpoints").glob("epoch*.ckpt")) or sorted((run / "checkpoints").glob("*.ckpt"))
    if not ckpts:
        raise FileNotFoundError(f"runs: {run} has no checkpoint under checkpoints/ (did its training finish?)")
    return ckpts[-1]


def evaluate(cfg: DictConfig) -> dict:
    """Run the whole evaluation described by ``cfg`` (conf/evaluate.yaml); returns results.json's content."""
    validate_evaluate_config(cfg)  # impossible k's and sizes, a missing dataset store: fail before any work
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg.seed))
    ds = DatasetStore(cfg.dataset)
    test_rows = _sample(ds.split_rows("test"), cfg.limit_test_images, int(cfg.seed))
    specs = {name: OmegaConf.to_container(spec, resolve=True) for name, spec in cfg.methods.items() if spec is not None}
    specs.update(methods_from_runs(cfg.runs))
    methods = {}
    for name, spec in specs.items():
        methods[name] = build_method(name, spec, ds, methods)

    ks = tuple(int(k) for k in cfg.tagging.ks)
    tagging, tag_preds = evaluate_tagging(methods, ds, test_rows, ks, int(cfg.chunk_images), max(50, max(ks)))

    # ---- retrieval: candidates are the (evaluated) test images ----------------------------------
    rcfg = cfg.retrieval
    k = int(rcfg.k)
    thresholds = [float(t) for t in rcfg.thresholds_km]
    exclude_self = bool(rcfg.exclude_query_image)
    # candidates: the tagging images, or a larger seeded sample of the test split (retrieval costs N pairs
    # a query, tagging V pairs an image: retrieval.limit_candidates lets the two be sized separately)
    cand = test_rows if rcfg.get("limit_candidates") is None else _sample(ds.split_rows("test"), rcfg.limit_candidates, int(cfg.seed))
    candidates = RetrievalCandidates.from_csr(ds.tags_indptr, ds.tags_indices, ds.num_tags, lat=ds.lat, lon=ds.lon, rows=cand)
    agn_tags = candidates.query_tags(int(rcfg.min_query_images))
    agnostic, agn_preds = {}, {}
    for name, m in methods.items():
        if hasattr(m, "retrieve") and not m.location_aware and len(agn_tags):
            ids = m.retrieve(agn_tags, None, None, cand, k)
            metric = RetrievalPrecision(candidates, k=k)
            metric.update(ids, agn_tags)
            agnostic[name] = metric.compute()
            agn_preds[name] = ids.numpy().astype(np.int32)

    q = build_location_queries(candidates, min_query_images=int(rcfg.min_query_images), seed=int(cfg.seed))
    if rcfg.max_queries is not None and len(q) > int(rcfg.max_queries):
        keep = np.sort(np.random.default_rng(int(cfg.seed)).choice(len(q), int(rcfg.max_queries), replace=False))
        q = q[torch.from_numpy(keep)]
    if len(q) == 0:
        log.warning("no location-sensitive query: no test tag has %d test images; lower retrieval.min_query_images",
                    int(rcfg.min_query_images))
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
        ub = location_sensitive_upper_bound(q, candidates, thresholds_km=thresholds, k=k, exclude_query_image=exclude_self)
        retrieval = {"upper_bound": precision_table(ub, thresholds), **retrieval}

    results = {
        "config": resolved_config(cfg, out_dir),
        "git_commit": git_commit(),
        "n_test_images": int(len(test_rows)),
        "n_retrieval_candidates": int(len(cand)),
        "n_location_queries": int(len(q)),
        "n_agnostic_queries": int(len(agn_tags)),
        "tagging": tagging,
        "location_sensitive_retrieval": retrieval,
        "location_agnostic_retrieval": agnostic,
        "thresholds_km": [t if math.isfinite(t) else "inf" for t in thresholds],
        "threshold_keys": [threshold_key(t) for t in thresholds],
    }
    _write_predictions(out_dir / "predictions.h5", ds, test_rows, tag_preds, q, cand, ret_preds, agn_tags, agn_preds)
    from locsens.eval.report import write_figures, write_tables

    results["figures"] = write_figures(out_dir / "figures", results, methods, ds, q, candidates, ret_preds, agn_tags, agn_preds)
    tables = write_tables(out_dir / "tables.md", results)
    _write_json(out_dir / "results.json", results)
    print(tables)
    wandb_cfg = cfg.get("wandb")
    if wandb_cfg is not None and wandb_cfg.enabled:  # optional: scalars, tables and figures to W&B (locsens.tracking)
        from locsens.tracking import log_evaluation

        log_evaluation(json.loads((out_dir / "results.json").read_text()), out_dir, project=wandb_cfg.project,
                       entity=wandb_cfg.entity, mode=wandb_cfg.mode)
    return results


def resolved_config(cfg: DictConfig, out_dir: Path) -> dict:
    """The config as plain values (also outside @hydra.main, where hydra: interpolations cannot resolve)."""
    cfg = cfg.copy()
    cfg.output_dir = str(out_dir)
    if "paths" in cfg and "output_dir" in cfg.paths:
        cfg.paths.output_dir = str(out_dir)
    return OmegaConf.to_container(cfg, resolve=True)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    tmp.replace(path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _write_predictions(path, ds, test_rows, tag_preds, q, cand, ret_preds, agn_tags, agn_preds) -> None:
    """Raw predictions in HDF5 (ids are vocabulary ids and dataset rows; photo ids included)."""
    with atomic_h5(path, "locsens.predictions", overwrite=True) as f:
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
