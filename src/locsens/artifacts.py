"""Artefacts: the names and layout of a world directory and of a run directory, and their lineage.

Every artefact records what it was made from, by content id (sha256 of a store's datasets, see
``locsens.data.store``) or by file sha256 (checkpoints, raw inputs)::

    dataset store      <- the raw input files (path, size, sha256) + the ingest config (+ the feature store it is paired with)
    feature store      <- the extractor + the image list (or the simulated world's parameters)
    agnostic checkpoint <- dataset store + feature store
    embeddings store   <- the agnostic checkpoint (sha256) + dataset store + feature store
    LocSens checkpoint <- embeddings store + dataset store
    results.json       <- every input's id above, with the git commit

A consumer compares what an artefact records with the artefacts it is given and refuses a mismatch
with :class:`LineageError`, naming both ids, the files and the command that fixes it; a cache
(``<run>/embeddings.h5``) is keyed on its inputs and rebuilt when they change.

World directory (``<paths.data_dir>/<world>/``)::

    yfcc100m_dataset.tsv   simulated world only: its raw metadata, real YFCC100M format
    ground_truth.json      simulated world only: the mechanisms' ground truth
    features.h5            locsens.features (for real data a link to the extracted store)
    dataset.h5             locsens.dataset, paired with features.h5 (records its content id)
    embeddings/<model>.h5  locsens.embeddings exported from a trained MLC / MCC / HER

Run directory (one ``train.py`` run; a multirun directory holds several, named 0, 1, ...)::

    .hydra/config.yaml     the resolved config          checkpoints/last.ckpt   end of the last epoch
    .hydra/overrides.yaml  the command-line overrides   checkpoints/epochNNN.ckpt   the best epoch
    metrics.json           final metrics, best checkpoint; written when training FINISHED
    csv/metrics.csv        the metric history          git_commit.txt
    embeddings.h5          (agnostic runs) the evaluation's export of the best checkpoint
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from locsens.files import file_sha256


class LineageError(ValueError):
    """An artefact was made from something other than what it is used with; the message says what and how to fix it."""


def short(content_id: str | None) -> str:
    return (content_id or "none")[:12]


def store_ref(path: str | Path) -> dict:
    """``{"id": content id, "path": path}`` of a store (read from its attributes)."""
    from locsens.data.store import read_identity

    return {"id": read_identity(path)[0], "path": str(path)}


def file_ref(path: str | Path) -> dict:
    """``{"sha256": ..., "path": ...}`` of a file (checkpoints, raw inputs)."""
    return {"sha256": file_sha256(path), "path": str(path)}


def require_made_from(artefact: str, recorded: dict | None, role: str, actual: dict, fix: str) -> None:
    """``artefact`` records it was made from ``recorded`` (``{"id", "path"}``) as ``role``; refuse if the
    ``actual`` artefact given for that role has another id."""
    recorded = recorded or {}
    key = "id" if "id" in actual else "sha256"
    if not recorded.get(key):
        raise LineageError(
            f"{artefact} does not record which {role} it was made from (made by an older locsens?); {fix}"
        )
    if recorded[key] != actual[key]:
        raise LineageError(
            f"{artefact} was made from {role} {short(recorded[key])} ({recorded.get('path')}), but the "
            f"{role} given is {short(actual[key])} ({actual['path']}); {fix}"
        )


def is_export_of(embeddings_path: str | Path, checkpoint: str | Path) -> bool:
    """Whether ``embeddings_path`` exists and was exported from exactly this checkpoint file (sha256)."""
    from locsens.data.store import read_identity

    if not Path(embeddings_path).exists():
        return False
    recorded = (read_identity(embeddings_path)[1].get("checkpoint") or {}).get("sha256")
    return recorded == file_sha256(checkpoint)


# --------------------------------------------------------------------------------------------
# world directory
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldLayout:
    root: Path

    @classmethod
    def of(cls, data_dir: str | Path, world: str) -> WorldLayout:
        return cls(Path(data_dir) / str(world))

    @property
    def dataset_path(self) -> Path:
        return self.root / "dataset.h5"

    @property
    def features_path(self) -> Path:
        return self.root / "features.h5"

    @property
    def tsv_path(self) -> Path:
        return self.root / "yfcc100m_dataset.tsv"

    @property
    def ground_truth_path(self) -> Path:
        return self.root / "ground_truth.json"

    def embeddings_path(self, model: str) -> Path:
        return self.root / "embeddings" / f"{model}.h5"


# --------------------------------------------------------------------------------------------
# run directory
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLayout:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def overrides_path(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.ckpt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def embeddings_cache(self) -> Path:
        return self.path / "embeddings.h5"

    @property
    def git_commit_path(self) -> Path:
        return self.path / "git_commit.txt"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def holds_training(self) -> bool:
        """A run already trained here (a checkpoint or final metrics exist)."""
        return self.metrics_path.exists() or self.last_checkpoint.exists()

    def config(self) -> DictConfig:
        return OmegaConf.load(self.config_path)

    def write_record(self, cfg: DictConfig) -> None:
        """``.hydra/config.yaml`` (resolved) and ``overrides.yaml`` (the command line, under Hydra), each
        atomically. train() writes them once the command is accepted (Hydra's own ``output_subdir`` is
        off: a refused command must not rewrite the record of the run it was refused for)."""
        from locsens.files import write_text_atomic

        write_text_atomic(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))
        overrides: list[str] = []
        try:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.initialized():
                overrides = [str(o) for o in HydraConfig.get().overrides.task]
        except ImportError:  # pragma: no cover - hydra is a dependency
            pass
        write_text_atomic(self.overrides_path, OmegaConf.to_yaml(OmegaConf.create(overrides)))

    def relative(self, path: str | Path | None) -> str | None:
        """``path`` relative to the run directory when inside it (metrics.json survives moving the run)."""
        if not path:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.path.resolve()))
        except ValueError:
            return str(path)

    def overrides(self) -> list[str]:
        return [str(o) for o in OmegaConf.load(self.overrides_path)] if self.overrides_path.exists() else []

    def metrics(self) -> dict:
        """``metrics.json`` of a finished run; a run still training (or killed) has none: refused."""
        if not self.metrics_path.is_file():
            state = (
                f"its last checkpoint is {self.last_checkpoint}"
                if self.last_checkpoint.exists()
                else "it has no checkpoint"
            )
            raise FileNotFoundError(
                f"run {self.path}: no metrics.json, so its training has not finished ({state}); "
                f"finish it (`python train.py ... ckpt_path={self.path}`) before evaluating it"
            )
        try:
            metrics = json.loads(self.metrics_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(
                f"run {self.path}: {self.metrics_path.name} is unreadable ({e}); rerun or resume the training"
            ) from None
        if metrics.get("status") != "finished":
            raise ValueError(
                f"run {self.path}: status {metrics.get('status')!r} in metrics.json, not a finished training "
                "(a fast_dev_run saves no checkpoint)"
            )
        return metrics

    def best_checkpoint(self) -> Path:
        metrics = self.metrics()
        best = metrics.get("best_checkpoint")
        if not best:
            raise FileNotFoundError(f"run {self.path}: metrics.json names no best checkpoint")
        # always this run's own file: a copied or moved run must not follow a path into another run
        best = self.checkpoints_dir / Path(best).name
        if not best.is_file():
            raise FileNotFoundError(f"run {self.path}: its best checkpoint {best} (metrics.json) is missing")
        return best

    def name(self) -> str:
        """A method name for tables: the run directory's name, or for multirun jobs (0, 1, ...) the task
        and what the sweep changed."""
        if not self.path.name.isdigit():
            return self.path.name
        tail = ",".join(
            o for o in self.overrides() if not o.startswith(("paths.", "world=", "trainer", "logger", "hydra"))
        )
        return str(self.config().get("task_name", self.path.name)) + (f"[{tail}]" if tail else f"#{self.path.name}")


# --------------------------------------------------------------------------------------------
# evaluation directory
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationLayout:
    """One ``evaluate.py`` output: ``predictions.h5``, ``tables.md`` and ``results.json`` (the numbers,
    one set: each records the same ``evaluation_id``; results.json is renamed into place last), then
    ``figures/``."""

    path: Path
    NUMBERS = ("predictions.h5", "tables.md", "results.json")  # the order they are renamed into place

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # a str from a notebook or the environment

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.h5"

    @property
    def tables_path(self) -> Path:
        return self.path / "tables.md"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    def holds_evaluation(self) -> bool:
        return any((self.path / name).exists() for name in self.NUMBERS)

    def results(self) -> dict:
        """``results.json``, after checking that predictions.h5 and tables.md are of the same evaluation
        (a run killed while replacing the set leaves a mix: refused, naming the files)."""
        import h5py

        if not self.results_path.is_file():
            raise FileNotFoundError(f"{self.path}: no results.json (run evaluate.py, or make demo, first)")
        results = json.loads(self.results_path.read_text())
        want = results.get("evaluation_id")
        if want is None:  # written before evaluation ids: nothing to compare
            return results
        found = {}
        if self.predictions_path.exists():
            with h5py.File(self.predictions_path, "r") as f:
                found["predictions.h5"] = f.attrs.get("evaluation_id")
        if self.tables_path.exists():
            found["tables.md"] = want if f"evaluation {want}" in self.tables_path.read_text() else "another"
        mixed = {name: got for name, got in found.items() if got != want}
        if mixed:
            raise LineageError(
                f"{self.path}: results.json is evaluation {want}, but {', '.join(mixed)} "
                f"{'is' if len(mixed) == 1 else 'are'} of another (an evaluation was interrupted while replacing "
                "its files); rerun it: python evaluate.py ... overwrite=true"
            )
        return results


def unique_run_names(runs: list[RunLayout], taken=()) -> list[str]:
    """Each run's table name (:meth:`RunLayout.name`), made unique: runs sharing a name (or taking a
    configured method's) get ``@`` and the shortest tail of their path that tells them apart."""
    names = [r.name() for r in runs]
    clash = {n for n in names if names.count(n) > 1 or n in set(taken)}
    out = list(names)
    for name in clash:
        group = [i for i, n in enumerate(names) if n == name]
        for depth in range(1, max(len(runs[i].path.resolve().parts) for i in group) + 1):
            tails = ["/".join(runs[i].path.resolve().parts[-depth:]) for i in group]
            if len(set(tails)) == len(tails) and not set(f"{name}@{t}" for t in tails) & set(taken):
                break
        for i, tail in zip(group, tails):
            out[i] = f"{name}@{tail}"
    return out


def expand_runs(paths) -> list[RunLayout]:
    """Run directories from paths that are runs or multirun directories (their numbered jobs)."""
    runs = []
    for p in paths or []:
        layout = RunLayout(Path(p))
        if layout.is_run():
            runs.append(layout)
            continue
        jobs = sorted(
            (RunLayout(c.parent.parent) for c in Path(p).glob("*/.hydra/config.yaml")), key=lambda r: r.path.name
        )
        if not jobs:
            raise FileNotFoundError(
                f"runs: {p} is neither a run directory (no .hydra/config.yaml) nor a multirun directory"
            )
        runs.extend(jobs)
    return runs


__all__ = [
    "EvaluationLayout",
    "LineageError",
    "RunLayout",
    "WorldLayout",
    "expand_runs",
    "unique_run_names",
    "file_ref",
    "is_export_of",
    "require_made_from",
    "short",
    "store_ref",
]
