"""Generic training: a Hydra config in, a fitted model, a run directory and the final metrics out.

``train(cfg)`` knows nothing about any particular model. It instantiates ``cfg.data`` (a
LightningDataModule with ``model_kwargs()`` and ``lineage()``), fills the model config's
data-dependent dimension keys that are null (and fails, naming both numbers and the stores, on those
set to something else), instantiates ``cfg.model``, ``cfg.callbacks`` (dict of ``_target_`` entries),
``cfg.logger`` (dict of ``_target_`` entries, or empty) and ``cfg.trainer``, and fits.

Run directory (``cfg.paths.output_dir``; layout in :mod:`locsens.artifacts`): ``.hydra/`` (Hydra writes
it; when train() is called without Hydra, e.g. from tests or notebooks, train() writes
``.hydra/config.yaml`` itself, resolved), ``checkpoints/`` (best + last, from
:class:`locsens.checkpointing.RunCheckpoint`), ``metrics.json`` (written atomically when training
finished: final metrics, best checkpoint, epochs, what it resumed from) and ``git_commit.txt``.

Resume: ``ckpt_path=<checkpoint or run directory>`` continues a run in this or any other run
directory with its best checkpoint, metric history, W&B run and RNG states (see
``locsens.checkpointing``). A run directory that already holds a run is refused unless resumed.
The checkpoint is checked before any work: a locsens checkpoint of the configured model, trained on
the same stores (content ids).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from locsens.artifacts import LineageError, RunLayout, short
from locsens.checkpointing import RECORD_KEY, RunCheckpoint, class_path, load_checkpoint
from locsens.config import ConfigError, validate_train_config
from locsens.files import exclusive, git_commit, write_json_atomic, write_text_atomic
from locsens.tracking import finish_loggers

log = logging.getLogger(__name__)
SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM: a preempted job, as the shell reports it


class TrainingError(RuntimeError):
    """Training produced nothing usable (no batches, no checkpoint); the message names the cause."""


def fill_data_dims(model_cfg: DictConfig, data_dims: dict[str, int], source: str) -> DictConfig:
    """Copy of ``model_cfg`` with null dimension keys filled from the data; a set key must agree."""
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        for key, found in data_dims.items():
            if key not in model_cfg:
                continue
            configured = model_cfg[key]
            if configured is not None and int(configured) != int(found):
                raise ValueError(f"model.{key}: the config says {configured} but {source} has {found}")
            model_cfg[key] = found
    return model_cfg


def _instantiate_dict(group: DictConfig | None, extra: dict | None = None) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not group:
        return []
    out = []
    for entry in group.values():
        if entry is None or "_target_" not in entry:
            continue
        out.append(instantiate(entry, **(extra or {}).get(entry._target_, {})))
    return out


def resolve_resume(ckpt_path, run: RunLayout) -> Path | None:
    """The checkpoint to resume from (a file, a run directory's last.ckpt, or ``last``: this run's own
    last.ckpt if it has one, for requeued jobs), or None for a fresh run; a fresh run into a directory
    that already holds one is refused."""
    if ckpt_path == "last":
        ckpt_path = run.path if run.last_checkpoint.exists() else None
        if ckpt_path is None and run.metrics_path.exists():
            raise FileExistsError(
                f"{run.path} holds a finished run without checkpoints/last.ckpt; train into another directory"
            )
    if ckpt_path is None:
        if run.holds_training():
            raise FileExistsError(
                f"{run.path} already holds a training run ({run.last_checkpoint.name} or metrics.json); "
                f"resume it with ckpt_path={run.path}, or train into another directory (hydra.run.dir=...)"
            )
        return None
    path = Path(str(ckpt_path))
    if path.is_dir():
        path = RunLayout(path).last_checkpoint
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path: {ckpt_path} is neither a checkpoint file nor a run directory with checkpoints/last.ckpt"
        )
    if run.holds_training() and path.resolve().parent != run.checkpoints_dir.resolve():
        # resuming run A into the directory of run B would overwrite B's checkpoints and metrics
        raise FileExistsError(
            f"{run.path} already holds another training run; resume {ckpt_path} into its own directory "
            f"(hydra.run.dir={path.parent.parent}) or into a new one"
        )
    return path


# trainer keys a resume may change (how long and where it runs); every other setting must stay
RESUME_MAY_CHANGE = frozenset(
    {"max_epochs", "max_steps", "max_time", "min_epochs", "min_steps", "accelerator", "devices", "num_nodes"}
    | {"strategy", "enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir"}
)
NOT_SETTINGS = frozenset({"dirpath", "num_workers", "pin_memory", "persistent_workers", "save_dir"})


def run_settings(cfg: DictConfig) -> dict[str, Any]:
    """What a resumed run must share with the run it continues beyond the model (hyperparameters) and the
    stores (content ids): the seed and the data, trainer and callback settings, as dotted keys."""
    flat: dict[str, Any] = {"seed": cfg.get("seed")}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if (
                    key in NOT_SETTINGS
                    or str(key).endswith("_path")
                    or (prefix == "trainer" and key in RESUME_MAY_CHANGE)
                ):
                    continue
                walk(f"{prefix}.{key}", value)
        else:
            flat[prefix] = node

    for group in ("data", "trainer", "callbacks"):
        node = cfg.get(group)
        if node is not None:
            walk(group, OmegaConf.to_container(node, resolve=True))
    return flat


def _callback_name(key: str) -> str | None:
    return key.split(".")[1] if key.startswith("callbacks.") else None


def check_same_settings(path: Path, ckpt: dict, settings: dict) -> None:
    saved = ckpt.get(RECORD_KEY, {}).get("settings")
    if saved is None:  # a checkpoint of an older locsens: nothing recorded to compare
        return
    # a callback added or left out (a progress monitor, a test's killer) is allowed; one kept must be unchanged
    both = {_callback_name(k) for k in saved} & {_callback_name(k) for k in settings}
    keys = {k for k in set(saved) | set(settings) if _callback_name(k) is None or _callback_name(k) in both}
    differ = sorted(k for k in keys if saved.get(k) != settings.get(k))
    if differ:
        raise ConfigError(
            f"ckpt_path: {path} was trained with other settings, and a resumed run must continue the same run: "
            + "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {settings.get(k)!r} now" for k in differ)
            + " (set them back, or start a new run)"
        )


def check_resume(path: Path, model_cfg: DictConfig, lineage: dict) -> dict:
    """The checkpoint to resume: a locsens checkpoint of the configured model class, trained on the same
    stores as this run (content ids)."""
    ckpt = load_checkpoint(path)
    record = ckpt["locsens"]
    want = class_path(get_class(model_cfg._target_))
    if record["model_class"] != want:
        raise ConfigError(f"ckpt_path: {path} is a checkpoint of {record['model_class']}, but model._target_ is {want}")
    made_from = record.get("made_from") or {}
    for role, actual in lineage.items():
        got = (made_from.get(role) or {}).get("id")
        if got != actual["id"]:
            raise LineageError(
                f"ckpt_path: {path} was trained on {role} {short(got)} ({(made_from.get(role) or {}).get('path')}), "
                f"but this run's {role} store is {short(actual['id'])} ({actual['path']}); resume with the "
                "stores it was trained on, or start a new run"
            )
    return ckpt


def check_same_model(path: Path, ckpt: dict, model) -> None:
    """A resumed checkpoint must hold the model the config builds: the same hyperparameters."""
    saved = ckpt.get("hyper_parameters") or {}
    differ = sorted(k for k in set(saved) | set(model.hparams) if saved.get(k) != model.hparams.get(k))
    if differ:
        raise ConfigError(
            f"ckpt_path: {path} was trained with other model settings: "
            + "; ".join(f"model.{k}: {saved.get(k)!r} in the checkpoint, {model.hparams.get(k)!r} now" for k in differ)
        )


def train(cfg: DictConfig) -> dict[str, float | str]:
    """Fit ``cfg.model`` on ``cfg.data``; returns the final metrics (floats), ``best_checkpoint`` (path) etc."""
    validate_train_config(cfg)  # unknown keys, impossible values, missing stores: fail before any work
    run = RunLayout(Path(cfg.paths.output_dir))
    resume = resolve_resume(cfg.get("ckpt_path"), run)
    with exclusive(run.path, "a training run"):
        return _train(cfg, run, resume)


def _train(cfg: DictConfig, run: RunLayout, resume: Path | None) -> dict[str, float | str]:
    run.path.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    lineage = datamodule.lineage()
    resumed = check_resume(resume, cfg.model, lineage) if resume is not None else {}
    record = resumed.get("locsens", {})
    model_cfg = fill_data_dims(cfg.model, datamodule.model_kwargs(), datamodule.describe())
    model = instantiate(model_cfg)
    settings = run_settings(cfg)
    if resume is not None:
        check_same_model(resume, resumed, model)
        check_same_settings(resume, resumed, settings)
        del resumed  # Lightning reads the file again (with weights_only=True) to restore the state
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    checkpoints = [c for c in callbacks if isinstance(c, RunCheckpoint)]
    if len(checkpoints) != 1:
        raise ConfigError(
            f"callbacks: exactly one locsens.checkpointing.RunCheckpoint is needed (found {len(checkpoints)})"
        )
    checkpoint = checkpoints[0]
    checkpoint.settings, checkpoint.resume_checkpoint = settings, resume
    run.write_record(cfg)  # every check passed: this command now owns the run directory's record
    write_text_atomic(run.git_commit_path, git_commit() + "\n")
    wandb_resume = (
        {"locsens.tracking.wandb_logger": {"id": record["wandb_run_id"]}} if record.get("wandb_run_id") else {}
    )
    loggers = _instantiate_dict(cfg.get("logger"), wandb_resume)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_checkpointing=False)
    for logger in loggers:  # the whole resolved config as hyperparameters (W&B config, CSV/TB hparams)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    except SIGTERMException:  # Lightning stops after the current batch; a SystemExit(None) would exit 0
        done = (
            f"the end of epoch {int(checkpoint.history[-1]['epoch'])}"
            if checkpoint.history
            else "nothing (no epoch finished)"
        )
        log.warning(
            "SIGTERM: training stopped; %s holds %s; resume with ckpt_path=%s", run.last_checkpoint, done, run.path
        )
        raise SystemExit(SIGTERM_EXIT_CODE) from None
    finally:
        finish_loggers(loggers)
    if trainer.fast_dev_run:  # a smoke test: no checkpoint, and a status evaluation refuses
        metrics = {"status": "fast_dev_run", **{k: float(v) for k, v in trainer.callback_metrics.items()}}
        if trainer.is_global_zero:
            write_json_atomic(run.metrics_path, metrics)
        log.info("fast_dev_run: no checkpoint saved; metrics %s", metrics)
        return metrics
    if trainer.global_step == 0:
        raise TrainingError(
            f"no optimiser step was taken: {datamodule.describe()} gave no training batches "
            "(check the training split's size against data.batch_size)"
        )
    metrics = checkpoint.summary()
    if not metrics["best_checkpoint"]:
        raise TrainingError(
            f"no best checkpoint: the monitored metric {checkpoint.monitor} was never logged (validation "
            "did not run: check trainer.limit_val_batches / check_val_every_n_epoch and the val split)"
        )
    metrics["status"] = "finished"
    metrics["made_from"] = lineage
    if trainer.is_global_zero:  # checkpoint paths relative to the run: a moved or copied run stays whole
        write_json_atomic(
            run.metrics_path,
            {**metrics, **{k: run.relative(metrics[k]) for k in ("best_checkpoint", "last_checkpoint")}},
        )
    log.info("final metrics: %s", metrics)
    return metrics
