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
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from locsens.artifacts import EvaluationLayout, expand_runs, file_ref, require_made_from, unique_run_names
from locsens.checkpointing import MODEL_CLASSES, checkpoint_record
from locsens.config import validate_evaluate_config
from locsens.data.store import STR, DatasetStore, StoreError, atomic_h5, read_identity
from locsens.eval.methods import build_method
from locsens.eval.shards import Part, fingerprint, read_shards, shard_path, share, write_shard
from locsens.files import exclusive, fsync_dir, git_commit, temp_dir, write_json_atomic
from locsens.metrics.places import DEFAULT_TOWN_KM, Photos, PlaceConsistency, PlaceGazetteer
from locsens.metrics.retrieval import (
    LocationQueries,
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


@dataclass
class Protocol:
    """What an evaluation scores, the same in every shard: the tagging test rows, the retrieval
    candidates, the location queries and the tag queries of location-agnostic retrieval."""

    rows: np.ndarray
    cand: np.ndarray
    candidates: RetrievalCandidates
    agnostic_tags: torch.Tensor
    queries: LocationQueries
    exclude: torch.Tensor  # place-name tags (the "places omitted" tables)
    ks: tuple[int, ...]
    k_keep: int  # tagging predictions kept per image (top 50, or the largest k)
    thresholds: list[float]
    gazetteer: PlaceGazetteer | None = None  # which tags name which places (the place-consistency measure)
    place_k: int = 10
    place_km: float = DEFAULT_TOWN_KM


def build_protocol(ds: DatasetStore, cfg: DictConfig) -> Protocol:
    seed = int(cfg.seed)
    rows = _sample(ds.split_rows("test"), cfg.limit_test_images, seed)
    if len(rows) == 0:
        raise EvaluationError(
            f"{cfg.dataset_path}: the test split is empty; nothing to evaluate (ingest with a non-empty ingest.split.test)"
        )
    rcfg = cfg.retrieval
    # candidates: the tagging images, or a larger seeded sample of the test split (retrieval costs N pairs
    # a query, tagging V pairs an image: retrieval.limit_candidates lets the two be sized separately)
    cand = rows if rcfg.get("limit_candidates") is None else _sample(ds.split_rows("test"), rcfg.limit_candidates, seed)
    ks = tuple(int(k) for k in cfg.tagging.ks)
    if max(ks) > ds.num_tags:
        raise EvaluationError(
            f"tagging.ks: k={max(ks)} is more than the {ds.num_tags} tags of {cfg.dataset_path}'s vocabulary "
            "(A@k would be 100 for every method); use k <= the vocabulary size"
        )
    need = int(rcfg.k) + int(bool(rcfg.exclude_query_image))
    if need > len(cand):
        raise EvaluationError(
            f"retrieval.k: {int(rcfg.k)} images per query need {need} retrieval candidates, but there are "
            f"{len(cand)} (the test images evaluated / retrieval.limit_candidates); lower retrieval.k"
        )
    candidates, agnostic_tags, queries = retrieval_queries(ds, cand, rcfg, seed)
    return Protocol(
        rows=rows,
        cand=cand,
        candidates=candidates,
        agnostic_tags=agnostic_tags,
        queries=queries,
        exclude=place_name_mask(ds.vocab, ds.place_names),
        ks=ks,
        k_keep=max(50, max(ks), int(cfg.tagging.place_consistency_k)),
        thresholds=[float(t) for t in rcfg.thresholds_km],
        gazetteer=PlaceGazetteer.from_dataset(ds),
        place_k=int(cfg.tagging.place_consistency_k),
        place_km=float(cfg.tagging.place_consistency_town_km),
    )


def retrieval_queries(ds: DatasetStore, cand: np.ndarray, rcfg: DictConfig, seed: int):
    """(candidates, tag queries of location-agnostic retrieval, location queries) over ``cand``."""
    candidates = RetrievalCandidates.from_csr(
        ds.tags_indptr, ds.tags_indices, ds.num_tags, lat=ds.lat, lon=ds.lon, rows=cand
    )
    agnostic_tags = candidates.query_tags(int(rcfg.min_query_images))
    q = build_location_queries(candidates, min_query_images=int(rcfg.min_query_images), seed=seed)
    if rcfg.max_queries is not None and len(q) > int(rcfg.max_queries):
        keep = np.sort(np.random.default_rng(seed).choice(len(q), int(rcfg.max_queries), replace=False))
        q = q[torch.from_numpy(keep)]
    if len(q) == 0:
        log.warning(
            "no location-sensitive query: no test tag has %d test images; lower retrieval.min_query_images",
            int(rcfg.min_query_images),
        )
    return candidates, agnostic_tags, q


def empty_part(methods: dict, ds: DatasetStore, protocol: Protocol, rcfg: DictConfig) -> Part:
    """Fresh metrics for every method and task it takes part in (what a shard's states are added to)."""
    part = Part()
    k, exclude_self = int(rcfg.k), bool(rcfg.exclude_query_image)
    for name, m in methods.items():
        part.tagging[name] = {
            "with_places": TaggingAccuracy(ds.num_tags, ks=protocol.ks),
            "places_omitted": TaggingAccuracy(ds.num_tags, ks=protocol.ks, exclude=protocol.exclude),
        }
        if protocol.gazetteer is not None:
            part.tagging[name]["place_consistency"] = PlaceConsistency(
                protocol.gazetteer, k=protocol.place_k, town_km=protocol.place_km
            )
        if hasattr(m, "retrieve") and not m.location_aware and len(protocol.agnostic_tags):
            part.agnostic[name] = RetrievalPrecision(protocol.candidates, k=k)
        if hasattr(m, "retrieve") and len(protocol.queries):
            part.location[name] = LocationSensitivePrecision(
                protocol.candidates, thresholds_km=protocol.thresholds, k=k, exclude_query_image=exclude_self
            )
    return part


def score_part(
    methods: dict, ds: DatasetStore, protocol: Protocol, cfg: DictConfig, index: int = 0, count: int = 1
) -> Part:
    """Shard ``index`` of ``count``: every method on its share of the test images, tag queries and location
    queries (contiguous, in whole chunks, so each chunk is the batch one process would score)."""
    part = empty_part(methods, ds, protocol, cfg.retrieval)
    chunk = int(cfg.chunk_images)
    rows = protocol.rows[share(len(protocol.rows), chunk, index, count)]
    for name, method in methods.items():
        metrics, top_all, top_omit = part.tagging[name], [], []
        for start in tqdm(range(0, len(rows), chunk), desc=f"tagging {name}", leave=False):
            r = rows[start : start + chunk]
            target = ground_truth_from_csr(ds.tags_indptr, ds.tags_indices, r)
            if hasattr(method, "rank_tags_both"):  # LocSens' cascade scores one shortlist for both rankings
                a, b = method.rank_tags_both(r, protocol.k_keep, protocol.exclude)
            else:
                a = method.rank_tags(r, protocol.k_keep)
                b = method.rank_tags(r, protocol.k_keep, exclude=protocol.exclude)
            metrics["with_places"].update(a, target)
            metrics["places_omitted"].update(b, target)
            if "place_consistency" in metrics:
                metrics["place_consistency"].update(a, target, Photos.of_rows(ds, r))
            top_all.append(a.int().numpy())
            top_omit.append(b.int().numpy())
        part.tag_preds[name] = (_stack(top_all, protocol.k_keep), _stack(top_omit, protocol.k_keep))

    rcfg = cfg.retrieval
    k, exclude_self = int(rcfg.k), bool(rcfg.exclude_query_image)
    tags = protocol.agnostic_tags[share(len(protocol.agnostic_tags), AGNOSTIC_CHUNK, index, count)]
    for name, metric in part.agnostic.items():
        ids = methods[name].retrieve(tags, None, None, protocol.cand, k) if len(tags) else torch.zeros((0, k))
        if len(tags):
            metric.update(ids, tags)
        part.agn_preds[name] = ids.numpy().astype(np.int32)
    bs = int(rcfg.chunk_queries)
    q = protocol.queries[share(len(protocol.queries), bs, index, count)]
    for name, metric in part.location.items():
        ids = []
        for s0 in tqdm(range(0, len(q), bs), desc=f"retrieval {name}", leave=False):
            qb = q[s0 : s0 + bs]
            got = methods[name].retrieve(qb.tag, qb.lat, qb.lon, protocol.cand, k + int(exclude_self))
            metric.update(got, qb)
            ids.append(got.numpy().astype(np.int32))
        part.ret_preds[name] = _stack(ids, k + int(exclude_self))
    part.pairs_scored = {n: dict(m.pairs_scored) for n, m in methods.items() if hasattr(m, "pairs_scored")}
    return part


AGNOSTIC_CHUNK = 1024  # tags per block of location-agnostic retrieval (EmbeddingMethod.retrieve's batch)


def _stack(chunks: list, width: int) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros((0, width), np.int32)


def evaluate_tagging(methods: dict, ds: DatasetStore, rows: np.ndarray, ks, chunk: int, k_keep: int = 50):
    """Tagging A@k / %pred / %cpred for every method on ``rows``, with and without place names:
    ``({name: {"with_places": .., "places_omitted": ..}}, {name: (top-k_keep, top-k_keep places omitted)})``."""
    ks = tuple(int(k) for k in ks)
    protocol = Protocol(
        rows=np.asarray(rows),
        cand=np.zeros(0, np.int64),
        candidates=None,
        agnostic_tags=torch.zeros(0, dtype=torch.long),
        queries=LocationQueries(*(torch.zeros(0),) * 5),
        exclude=place_name_mask(ds.vocab, ds.place_names),
        ks=ks,
        k_keep=max(k_keep, max(ks)),
        thresholds=[],
        gazetteer=PlaceGazetteer.from_dataset(ds),
    )
    cfg = OmegaConf.create(
        {"chunk_images": chunk, "retrieval": {"k": 10, "exclude_query_image": False, "chunk_queries": 1}}
    )
    part = score_part(methods, ds, protocol, cfg)
    results = {n: {key: m.compute() for key, m in metrics.items()} for n, metrics in part.tagging.items()}
    return results, part.tag_preds


def methods_from_runs(runs, dataset_path, locsens_dtype: str = "auto", taken=()) -> dict:
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
    layouts = expand_runs(runs)
    for run, name in zip(layouts, unique_run_names(layouts, taken)):
        ckpt = run.best_checkpoint()
        record = checkpoint_record(ckpt)
        made_from = record.get("made_from") or {}
        if MODEL_CLASSES[record["model_class"]] == "prior":
            specs[name] = {"kind": "prior", "prior": "learned", "checkpoint": str(ckpt)}
            continue
        if MODEL_CLASSES[record["model_class"]] == "locsens":
            specs[name] = {
                "kind": "locsens",
                "checkpoint": str(ckpt),
                "embeddings_path": made_from["embeddings"]["path"],
                "dtype": locsens_dtype,
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
        specs[name] = {"kind": "embeddings", "embeddings_path": str(cache)}
    return specs


def build_methods(cfg: DictConfig, ds: DatasetStore) -> dict:
    specs = {name: OmegaConf.to_container(spec, resolve=True) for name, spec in cfg.methods.items() if spec is not None}
    specs.update(methods_from_runs(cfg.runs, cfg.dataset_path, cfg.locsens_dtype, taken=set(specs)))
    if not specs:
        raise EvaluationError("no method to evaluate: every entry of methods is null and runs is empty")
    shortlists = {"tagging": _plain(cfg.tagging.get("shortlist")), "retrieval": _plain(cfg.retrieval.get("shortlist"))}
    methods = {}
    # a product of experts may name a method listed after it (a prior from runs=[...]): build it after
    # the methods it names, keep the table in the listed order
    later = [n for n, s in specs.items() if s.get("kind") == "product_of_experts"]
    for name in [n for n in specs if n not in later] + later:
        methods[name] = build_method(name, specs[name], ds, methods, shortlists)
    return {name: methods[name] for name in specs}


def _plain(node):
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def evaluation_mode(cfg: DictConfig) -> dict:
    """How LocSens was scored, for results.json and the tables' header: exhaustive (every tag / every
    candidate image) or the cascade with its shortlist sizes."""
    tagging, retrieval = _plain(cfg.tagging.get("shortlist")), _plain(cfg.retrieval.get("shortlist"))
    return {
        "tagging": "exhaustive" if tagging is None else {"cascade": tagging},
        "retrieval": "exhaustive" if retrieval is None else {"cascade": retrieval},
    }


def evaluate_retrieval(methods: dict, ds: DatasetStore, cand: np.ndarray, rcfg: DictConfig, seed: int):
    """Location-agnostic and location-sensitive P@10 of every method over the candidate rows ``cand``,
    with the upper bound (the retrieval half of :func:`evaluate`)."""
    candidates, agnostic_tags, queries = retrieval_queries(ds, cand, rcfg, seed)
    protocol = Protocol(
        rows=np.zeros(0, np.int64),
        cand=np.asarray(cand),
        candidates=candidates,
        agnostic_tags=agnostic_tags,
        queries=queries,
        exclude=place_name_mask(ds.vocab, ds.place_names),
        ks=(1,),
        k_keep=1,
        thresholds=[float(t) for t in rcfg.thresholds_km],
    )
    cfg = OmegaConf.create({"chunk_images": 1, "retrieval": OmegaConf.to_container(rcfg)})
    return retrieval_results(protocol, score_part(methods, ds, protocol, cfg), rcfg)


def retrieval_results(protocol: Protocol, part: Part, rcfg: DictConfig) -> dict:
    q, k = protocol.queries, int(rcfg.k)
    retrieval = {name: metric.compute() for name, metric in part.location.items()}
    if len(q):
        ub = location_sensitive_upper_bound(
            q,
            protocol.candidates,
            thresholds_km=protocol.thresholds,
            k=k,
            exclude_query_image=bool(rcfg.exclude_query_image),
        )
        retrieval = {"upper_bound": precision_table(ub, protocol.thresholds), **retrieval}
    return {
        "candidates": protocol.candidates,
        "queries": q,
        "agnostic_tags": protocol.agnostic_tags,
        "agnostic": {name: metric.compute() for name, metric in part.agnostic.items()},
        "agnostic_predictions": part.agn_preds,
        "location_sensitive": retrieval,
        "location_sensitive_predictions": part.ret_preds,
        "thresholds": protocol.thresholds,
    }


def evaluate(cfg: DictConfig) -> dict:
    """Run the whole evaluation described by ``cfg`` (conf/evaluate.yaml); returns results.json's content.

    With ``shard.count > 1`` this process scores shard ``shard.index`` only and saves it in ``shard.dir``;
    the process that completes the set merges every shard there (the others return ``{}``)."""
    cfg = validate_evaluate_config(cfg)  # typed values, unknown keys, a missing dataset store: fail before any work
    out_dir = Path(cfg.output_dir)
    with exclusive(out_dir, "an evaluation"):
        if int(cfg.shard.count) == 1 and EvaluationLayout(out_dir).holds_evaluation() and not cfg.overwrite:
            raise EvaluationError(
                f"{out_dir} already holds an evaluation (results.json, tables.md, predictions.h5); evaluate into "
                "another directory (hydra.run.dir=...), or pass overwrite=true to replace it as a whole"
            )
        return _evaluate(cfg, out_dir)


def _evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    torch.manual_seed(int(cfg.seed))
    ds = DatasetStore(cfg.dataset_path)
    protocol = build_protocol(ds, cfg)
    methods = build_methods(cfg, ds)
    index, count = int(cfg.shard.index), int(cfg.shard.count)
    part = score_part(methods, ds, protocol, cfg, index, count)
    if count == 1:
        return finish(cfg, out_dir, ds, methods, protocol, part)
    shard_dir = Path(cfg.shard.dir)
    evaluation = fingerprint(resolved_config(cfg, out_dir), evaluation_identity(ds, methods))
    write_shard(shard_path(shard_dir, index, count), part, index, count, evaluation)
    log.info("shard %d of %d saved in %s", index, count, shard_dir)
    with exclusive(shard_dir, "a merge of evaluation shards", wait=True):
        if (shard_dir / "results.json").exists() and _merged(shard_dir, evaluation):
            return {}  # another shard merged the set (this one included) already
        merged = read_shards(shard_dir, count, evaluation, empty_part(methods, ds, protocol, cfg.retrieval))
        if merged is None:
            log.info(
                "%d of %d shards in %s: the last to finish merges them",
                len(list(shard_dir.glob("shard-*"))),
                count,
                shard_dir,
            )
            return {}
        results = finish(cfg, shard_dir, ds, methods, protocol, merged, evaluation)
        return results


def _merged(shard_dir: Path, evaluation: str) -> bool:
    """Whether ``results.json`` in ``shard_dir`` is the merge of this evaluation's complete shard set and
    newer than every shard file (a rerun shard makes the merge stale)."""
    import json

    try:
        done = json.loads((shard_dir / "results.json").read_text())
    except (OSError, ValueError):
        return False
    newest = max((p.stat().st_mtime_ns for p in shard_dir.glob("shard-*-of-*.h5")), default=0)
    return (
        done.get("shards", {}).get("evaluation") == evaluation
        and (shard_dir / "results.json").stat().st_mtime_ns > newest
    )


def evaluation_identity(ds: DatasetStore, methods: dict) -> dict:
    """What the shards of one evaluation must share beyond the config: the dataset, every method's inputs
    and the dtype its scoring engine chose (``dtype=auto`` is measured per process)."""
    return {
        "dataset": ds.content_id,
        "methods": {name: getattr(m, "lineage", {}) for name, m in methods.items()},
        "dtypes": {name: m.engine.dtype_used for name, m in methods.items() if hasattr(m, "engine")},
    }


def split_kind(dataset_path) -> dict:
    """How the dataset's test split was drawn (``by``: random | user | cell, and the sizes), from its record."""
    from locsens.prepare import current_ingest_form

    ingest = read_identity(dataset_path)[1].get("ingest_config") or {}
    return current_ingest_form(ingest).get("split", {}) if ingest else {"by": "unknown"}


def finish(
    cfg: DictConfig,
    out_dir: Path,
    ds: DatasetStore,
    methods: dict,
    protocol: Protocol,
    part: Part,
    evaluation: str | None = None,
) -> dict:
    """The metrics of ``part`` (the whole protocol) -> results.json, tables.md, predictions.h5 (numbers
    first), then figures and W&B."""
    tagging = {n: {key: m.compute() for key, m in metrics.items()} for n, metrics in part.tagging.items()}
    ret = retrieval_results(protocol, part, cfg.retrieval)
    thresholds = ret["thresholds"]
    results = {
        "config": resolved_config(cfg, out_dir),
        "git_commit": git_commit(),
        "inputs": {
            "dataset": {"id": ds.content_id, "path": str(cfg.dataset_path)},
            "methods": {name: getattr(m, "lineage", {}) for name, m in methods.items()},
        },
        "split": split_kind(cfg.dataset_path),
        "n_test_images": int(len(protocol.rows)),
        "n_retrieval_candidates": int(len(protocol.cand)),
        "n_location_queries": int(len(ret["queries"])),
        "n_agnostic_queries": int(len(ret["agnostic_tags"])),
        "locsens_scoring": {**evaluation_mode(cfg), "pairs_scored": part.pairs_scored},
        "tagging": tagging,
        "location_sensitive_retrieval": ret["location_sensitive"],
        "location_agnostic_retrieval": ret["agnostic"],
        "thresholds_km": [t if math.isfinite(t) else "inf" for t in thresholds],
        "threshold_keys": [threshold_key(t) for t in thresholds],
        "figures": [],
        "evaluation_id": uuid.uuid4().hex,  # in each of the numbers' files: a consumer refuses a mixed set
    }
    if evaluation is not None:
        results["shards"] = {"count": int(cfg.shard.count), "evaluation": evaluation}
    tables = save_numbers(out_dir, results, ds, protocol.rows, part.tag_preds, ret, protocol.cand)
    print(tables)
    save_reports(cfg, out_dir, results, methods, ds, ret)
    return results


def save_numbers(out_dir: Path, results: dict, ds: DatasetStore, test_rows, tag_preds, ret: dict, cand) -> str:
    """predictions.h5, tables.md and results.json: built together in a folder beside them, then renamed
    into place (results.json last); a failure before leaves any earlier evaluation whole, and the files
    share ``evaluation_id`` (:class:`locsens.artifacts.EvaluationLayout` refuses a mixed set)."""
    from locsens.eval.report import write_tables

    layout = EvaluationLayout(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with temp_dir(out_dir / "numbers") as staging:
        _write_predictions(
            staging / "predictions.h5",
            ds,
            test_rows,
            tag_preds,
            ret["queries"],
            cand,
            ret["location_sensitive_predictions"],
            ret["agnostic_tags"],
            ret["agnostic_predictions"],
            results["evaluation_id"],
        )
        tables = write_tables(staging / "tables.md", results)
        write_json_atomic(staging / "results.json", results)
        if layout.figures_dir.is_dir():  # the earlier evaluation's figures would sit beside these numbers
            shutil.rmtree(layout.figures_dir)
        for name in layout.NUMBERS:
            os.replace(staging / name, out_dir / name)
        fsync_dir(out_dir)
    return tables


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


def _write_predictions(path, ds, test_rows, tag_preds, q, cand, ret_preds, agn_tags, agn_preds, evaluation_id) -> None:
    """Raw predictions in HDF5 (ids are vocabulary ids and dataset rows; photo ids included)."""
    with atomic_h5(path, "locsens.predictions", overwrite=True) as f:
        f.attrs["dataset_id"] = ds.content_id
        f.attrs["evaluation_id"] = evaluation_id
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
    "build_protocol",
    "evaluate_retrieval",
    "evaluate_tagging",
    "finish",
    "score_part",
    "methods_from_runs",
]
