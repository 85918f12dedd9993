"""Weights & Biases: the training logger (offline unless credentials are configured) and evaluation logging.

Training: ``logger=wandb`` (conf/logger/wandb.yaml) builds :func:`wandb_logger`, a Lightning
``WandbLogger`` whose run lives under the run directory (``<run dir>/wandb/offline-run-*`` or
``run-*``), so an offline run is uploaded later with ``wandb sync <run dir>/wandb/offline-run-*``.
``offline: null`` (the default) means offline when no credentials are configured -- ``WANDB_API_KEY``
unset and no ``~/.netrc`` (or ``$NETRC``) entry for the W&B host -- and online otherwise;
``offline: true`` forces offline.

Evaluation: :func:`log_evaluation` (called at the end of ``locsens.eval.pipeline.evaluate`` when
``wandb.enabled``) logs every scalar of results.json, the tables as ``wandb.Table`` and the figures
as ``wandb.Image``, into ``<evaluation dir>/wandb``.
"""

from __future__ import annotations

import csv
import io
import math
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from locsens.files import write_text_atomic

WANDB_MODES = ("offline", "online", "auto", "disabled")


def wandb_credentials_configured() -> bool:
    """True when wandb could authenticate: ``WANDB_API_KEY`` set, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        entry = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def wandb_logger(
    save_dir: str,
    project: str = "locsens",
    entity: str | None = None,
    name: str | None = None,
    offline: bool | None = None,
    log_model: bool = False,
    group: str | None = None,
    tags: list[str] | None = None,
    job_type: str = "train",
    id: str | None = None,
) -> WandbLogger:
    """A ``WandbLogger`` writing under ``save_dir``; ``offline=None``: offline iff no credentials are configured.

    ``id``: resume that W&B run (``train()`` passes the id recorded in the checkpoint it resumes)."""
    if offline is None:
        offline = not wandb_credentials_configured()
    extra = {"id": id, "resume": "allow"} if id else {}
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        name=name,
        offline=offline,
        log_model=log_model and not offline,
        group=group,
        tags=list(tags) if tags else None,
        job_type=job_type,
        **extra,
    )


class RunCSVLogger(Logger):
    """Metrics to ``<save_dir>/<name>/metrics.csv`` (and hyperparameters to ``hparams.yaml``), never losing rows.

    Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a resumed run starts. This one
    appends every row to the file as it is logged (Lightning saves after each log call), rewrites the
    file atomically when the header grows, and on resume (``restore``, called by ``RunCheckpoint``)
    starts from the resumed run's file -- read from wherever that run wrote it, else the rows kept in
    the checkpoint -- up to the checkpoint's epoch, so a resumed run's file is the earlier history
    followed by the new epochs, in any run directory.
    """

    def __init__(self, save_dir: str, name: str = "csv", version: str = ""):
        super().__init__()
        self._save_dir, self._name, self._version = str(save_dir), name, version
        self.rows: list[dict[str, float]] = []
        self._keys: list[str] = []
        self._written = 0  # rows already in the file

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def log_dir(self) -> str:
        return (
            str(Path(self._save_dir) / self._name / self._version)
            if self._version
            else str(Path(self._save_dir) / self._name)
        )

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        from omegaconf import OmegaConf

        params = params if isinstance(params, dict) else vars(params)
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(self.log_dir) / "hparams.yaml", OmegaConf.to_yaml(OmegaConf.create(_plain(params))))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: float(v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        row["step"] = float(len(self.rows) if step is None else step)
        self.rows.append(row)

    def restore(self, earlier_path: str, saved_rows: list[dict], last_epoch: int) -> None:
        """Start from the resumed run's rows of epochs <= ``last_epoch`` (its file if readable, else ``saved_rows``)."""
        rows = read_metrics_csv(earlier_path) if Path(earlier_path).is_file() else [dict(r) for r in saved_rows]
        self.rows = [r for r in rows if r.get("epoch", -1) <= last_epoch]
        self._written, self._keys = 0, []
        self.save()

    @rank_zero_only
    def save(self) -> None:
        if not self.rows:
            return
        keys = sorted({k for row in self.rows for k in row})
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        if keys != self._keys or not self.metrics_path.exists():  # new columns: rewrite the whole file atomically
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
            write_text_atomic(self.metrics_path, buf.getvalue())
        elif self._written < len(self.rows):
            with open(self.metrics_path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=keys).writerows(self.rows[self._written :])
        self._keys, self._written = keys, len(self.rows)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def read_metrics_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as dicts of floats (empty cells left out; a torn last line is skipped)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                rows.append({k: float(v) for k, v in row.items() if k is not None and v not in ("", None)})
            except ValueError:  # a line cut by a kill mid-write
                continue
    return rows


def _plain(obj):
    """Hyperparameters as YAML-safe values (paths and other objects as strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if obj is None or isinstance(obj, (bool, int, float, str)) else str(obj)


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs train() started (flushes the offline run file; a later train() gets a new run)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish()


# ---- evaluation ----------------------------------------------------------------------------------
def flatten_scalars(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested dict as ``{"a/b/c": value}`` (lists and strings skipped)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten_scalars(value, f"{prefix}/{key}" if prefix else str(key)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        out[prefix] = float(obj)
    elif hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # 0-d tensors / numpy scalars
        value = float(obj.item())
        if math.isfinite(value):
            out[prefix] = value
    return out


def results_tables(results: dict) -> dict[str, tuple[list[str], list[list]]]:
    """The evaluation's tables as ``{name: (columns, rows)}``: one row per method (and tagging setting)."""
    tables: dict[str, tuple[list[str], list[list]]] = {}
    tagging_rows = [
        (f"{method}", setting, flatten_scalars(values))
        for method, settings in results.get("tagging", {}).items()
        for setting, values in settings.items()
        if setting != "place_consistency"
    ]
    places = {m: s["place_consistency"] for m, s in results.get("tagging", {}).items() if "place_consistency" in s}
    if places:
        metrics = list(dict.fromkeys(k for v in places.values() for k in v))
        tables["place_consistency"] = (
            ["method", *metrics],
            [[m, *(v.get(k) for k in metrics)] for m, v in places.items()],
        )
    if tagging_rows:
        metrics = sorted({k for _, _, v in tagging_rows for k in v})
        tables["tagging"] = (
            ["method", "setting", *metrics],
            [[m, s, *(v.get(k) for k in metrics)] for m, s, v in tagging_rows],
        )
    for section in ("location_sensitive_retrieval", "location_agnostic_retrieval"):
        rows = {method: flatten_scalars(values) for method, values in results.get(section, {}).items()}
        if rows:
            metrics = list(dict.fromkeys(k for v in rows.values() for k in v))
            tables[section] = (["method", *metrics], [[m, *(v.get(k) for k in metrics)] for m, v in rows.items()])
    return tables


def log_evaluation(
    results: dict, out_dir: Path, project: str = "locsens", entity: str | None = None, mode: str = "offline"
) -> Path:
    """Log one evaluation to W&B under ``out_dir/wandb``; returns the W&B run directory."""
    import wandb

    if mode not in WANDB_MODES:
        raise ValueError(f"wandb.mode={mode!r}; expected one of {WANDB_MODES}")
    if mode == "auto":
        mode = "online" if wandb_credentials_configured() else "offline"
    run = wandb.init(
        project=project,
        entity=entity,
        mode=mode,
        dir=str(out_dir),
        name=Path(out_dir).name,
        job_type="evaluate",
        config=results.get("config", {}),
        reinit="create_new",
    )
    try:
        scalars = flatten_scalars({k: v for k, v in results.items() if k != "config"})
        tables = {
            f"table/{name}": wandb.Table(columns=cols, data=rows)
            for name, (cols, rows) in results_tables(results).items()
        }
        figures = {f"figure/{Path(p).stem}": wandb.Image(str(p)) for p in results.get("figures", [])}
        run.log({**scalars, **tables, **figures})
        run.summary.update(scalars)
        return Path(run.dir).parent
    finally:
        run.finish()


__all__ = [
    "WANDB_MODES",
    "finish_loggers",
    "flatten_scalars",
    "log_evaluation",
    "results_tables",
    "wandb_credentials_configured",
    "wandb_logger",
]
