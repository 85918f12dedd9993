"""Sharded evaluation: one evaluation split over processes, merged exactly.

The protocol (test images for tagging, location queries, tag queries) is the same in every process;
each shard takes a contiguous share of it in whole chunks (``share``), so every chunk is scored with
the same batch as in one process, and saves a shard file: its metrics' states and its raw predictions
(``write_shard``). The process that completes the set merges them (``read_shards``): the states are
integer counts reduced by sum and the predictions are concatenated in shard order, so the merged
``results.json`` and ``predictions.h5`` are those of one process. Shards run as jobs of a Hydra
multirun (joblib locally, submitit on SLURM) or of any array job::

    python evaluate.py -m shard.count=4 shard.index=0,1,2,3 shard.dir=outputs/eval-4shards runs=[...]

A shard file records a fingerprint of the evaluation it belongs to (the resolved config without the
shard index and output paths, the dataset id, every method's inputs and scoring dtype); shards of
different evaluations in one directory are refused, naming the files.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torchmetrics import Metric

from locsens.data.store import atomic_h5

SHARD_KIND = "locsens.evaluation_shard"
VOLATILE_KEYS = ("output_dir", "shard", "hydra")  # config keys that differ between the shards of one evaluation


class ShardError(RuntimeError):
    """Shard files that cannot be merged: another evaluation's, a duplicate, or a damaged file."""


def share(n_items: int, block: int, index: int, count: int) -> slice:
    """Shard ``index`` of ``count``'s contiguous share of ``n_items`` items, in whole blocks of ``block``
    (the last block may be short). Shares cover every item once; a shard may get none.

    >>> [share(10, 3, i, 2) for i in range(2)]
    [slice(0, 6, None), slice(6, 10, None)]
    """
    n_blocks = math.ceil(n_items / block) if n_items else 0
    lo, hi = n_blocks * index // count, n_blocks * (index + 1) // count
    return slice(min(lo * block, n_items), min(hi * block, n_items))


@dataclass
class Part:
    """A share of an evaluation, per method in table order: metrics (torchmetrics, sum states) and the
    raw predictions they were computed from."""

    tagging: dict[str, dict[str, Metric]] = field(default_factory=dict)  # {"with_places": .., "places_omitted": ..}
    tag_preds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # top-50, places omitted
    agnostic: dict[str, Metric] = field(default_factory=dict)
    agn_preds: dict[str, np.ndarray] = field(default_factory=dict)
    location: dict[str, Metric] = field(default_factory=dict)
    ret_preds: dict[str, np.ndarray] = field(default_factory=dict)
    pairs_scored: dict[str, dict[str, int]] = field(default_factory=dict)


def fingerprint(config: dict, identity: dict) -> str:
    """sha256 of what makes an evaluation: the resolved config without ``VOLATILE_KEYS`` (nor the paths
    group's output directories) and ``identity`` (dataset id, method inputs, scoring dtypes)."""
    cfg = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    if isinstance(cfg.get("paths"), dict):
        cfg["paths"] = {k: v for k, v in cfg["paths"].items() if k not in ("output_dir", "log_dir")}
    text = json.dumps({"config": cfg, "identity": identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def shard_path(directory: Path, index: int, count: int) -> Path:
    return Path(directory) / f"shard-{index:04d}-of-{count:04d}.h5"


def _states(metric: Metric) -> dict[str, torch.Tensor]:
    return {name: getattr(metric, name) for name in metric._defaults}


def _write_metric(group: h5py.Group, metric: Metric) -> None:
    for name, value in _states(metric).items():
        group.create_dataset(name, data=value.cpu().numpy())


def _add_metric(metric: Metric, group: h5py.Group, where: str) -> None:
    incoming = {}
    for name, value in _states(metric).items():
        if name not in group:
            raise ShardError(f"{where}: no state {group.name}/{name}; the file is damaged or from another version")
        incoming[name] = torch.as_tensor(np.asarray(group[name][()])).to(value.dtype)
    metric.merge_state(incoming)  # sum states: integer counts, exact in any order
    metric._update_count += 1  # merged states are updates (torchmetrics warns on compute() without one)


def write_shard(path: Path, part: Part, index: int, count: int, evaluation: str) -> None:
    """``part`` as shard ``index`` of ``count`` of the evaluation ``evaluation`` (a fingerprint), atomically."""
    with atomic_h5(path, SHARD_KIND, overwrite=True) as f:
        f.attrs.update({"index": index, "count": count, "evaluation": evaluation})
        for task in ("tagging", "agnostic", "location"):
            f.create_group(task).attrs["methods"] = json.dumps(list(getattr(part, task)))
        for i, (name, metrics) in enumerate(part.tagging.items()):
            g = f["tagging"].create_group(str(i))
            for key, metric in metrics.items():
                _write_metric(g.create_group(key), metric)
            top, top_omit = part.tag_preds[name]
            g.create_dataset("top50", data=top)
            g.create_dataset("top50_places_omitted", data=top_omit)
        for task, preds in (("agnostic", part.agn_preds), ("location", part.ret_preds)):
            for i, (name, metric) in enumerate(getattr(part, task).items()):
                g = f[task].create_group(str(i))
                _write_metric(g.create_group("metric"), metric)
                g.create_dataset("ids", data=preds[name])
        f.attrs["pairs_scored"] = json.dumps(part.pairs_scored)


def read_shards(directory: Path, count: int, evaluation: str, empty: Part) -> Part | None:
    """The merged ``Part`` of all ``count`` shards in ``directory`` (``empty``: fresh metrics of every
    method, whose states are summed into), or ``None`` while some are missing. Shards of another
    evaluation are refused."""
    paths = [shard_path(directory, i, count) for i in range(count)]
    if not all(p.exists() for p in paths):
        return None
    others = sorted(set(Path(directory).glob("shard-*-of-*.h5")) - set(paths))
    if others:
        raise ShardError(
            f"{directory} holds shard files of another split ({', '.join(p.name for p in others)}) beside the "
            f"{count} of this one; give each sharded evaluation its own shard.dir"
        )
    merged = empty
    tag_preds: dict[str, list] = {n: [] for n in merged.tagging}
    agn: dict[str, list] = {n: [] for n in merged.agnostic}
    loc: dict[str, list] = {n: [] for n in merged.location}
    for path in paths:
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise ShardError(f"{path}: not a readable shard file ({e}); rerun that shard") from None
        with f:
            if f.attrs.get("schema") != SHARD_KIND or f.attrs.get("evaluation") != evaluation:
                raise ShardError(
                    f"{path} belongs to another evaluation (fingerprint {str(f.attrs.get('evaluation'))[:12]}, this "
                    f"one is {evaluation[:12]}): its config, dataset or models differ; remove it or use another "
                    "shard.dir"
                )
            for task, names in (
                ("tagging", merged.tagging),
                ("agnostic", merged.agnostic),
                ("location", merged.location),
            ):
                listed = json.loads(f[task].attrs["methods"])
                if listed != list(names):
                    raise ShardError(f"{path}: {task} methods {listed}, expected {list(names)}")
            for i, (name, metrics) in enumerate(merged.tagging.items()):
                g = f["tagging"][str(i)]
                for key, metric in metrics.items():
                    _add_metric(metric, g[key], str(path))
                tag_preds[name].append((g["top50"][()], g["top50_places_omitted"][()]))
            for task, preds in (("agnostic", agn), ("location", loc)):
                for i, (name, metric) in enumerate(getattr(merged, task).items()):
                    g = f[task][str(i)]
                    _add_metric(metric, g["metric"], str(path))
                    preds[name].append(g["ids"][()])
            for name, pairs in json.loads(f.attrs["pairs_scored"]).items():
                total = merged.pairs_scored.setdefault(name, {})
                for task, n in pairs.items():
                    total[task] = total.get(task, 0) + int(n)
    merged.tag_preds = {
        n: tuple(np.concatenate([p[j] for p in parts]) for j in (0, 1)) for n, parts in tag_preds.items()
    }
    merged.agn_preds = {n: np.concatenate(parts) for n, parts in agn.items()}
    merged.ret_preds = {n: np.concatenate(parts) for n, parts in loc.items()}
    return merged


__all__ = ["Part", "ShardError", "fingerprint", "read_shards", "share", "shard_path", "write_shard"]
