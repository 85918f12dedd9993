"""Generic training: a Hydra config in, a fitted model, a run directory and the final metrics out.

``train(cfg)`` knows nothing about any particular model. It instantiates ``cfg.data`` (a
LightningDataModule with ``model_kwargs()``), fills the model config's data-dependent dimension keys
that are null (and fails, naming both numbers and the stores, on those set to something else),
instantiates ``cfg.model``, ``cfg.callbacks`` (dict of ``_target_`` entries), ``cfg.logger`` (dict of
``_target_`` entries, or empty) and ``cfg.trainer``, and fits.

Run directory (``cfg.paths.output_dir``): ``.hydra/`` (Hydra writes it; when train() is called
without Hydra, e.g. from tests or notebooks, train() writes ``.hydra/config.yaml`` itself, resolved),
``checkpoints/`` (best + last, from the checkpoint callback), ``metrics.json`` (final metrics,
written atomically) and ``git_commit.txt``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from locsens.config import validate_train_config
from locsens.tracking import finish_loggers

log = logging.getLogger(__name__)


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


def git_commit() -> str:
    """``<sha>`` of the repository this code runs from, with ``-dirty`` when tracked files changed."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("-dirty" if dirty else "")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _instantiate_dict(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def train(cfg: DictConfig) -> dict[str, float | str]:
    """Fit ``cfg.model`` on ``cfg.data``; returns final metrics (floats) and ``best_checkpoint`` (path)."""
    validate_train_config(cfg)  # unknown keys, impossible values, missing stores: fail before any work
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / ".hydra").exists():
        (output_dir / ".hydra").mkdir()
        write_text_atomic(output_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_text_atomic(output_dir / "git_commit.txt", git_commit() + "\n")

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model_cfg = fill_data_dims(cfg.model, datamodule.model_kwargs(), datamodule.describe())
    model = instantiate(model_cfg)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:  # the whole resolved config as hyperparameters (W&B config, CSV/TB hparams)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    finally:
        finish_loggers(loggers)

    metrics: dict[str, float | str] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if checkpoint is not None:
        metrics["best_checkpoint"] = checkpoint.best_model_path or checkpoint.last_model_path
        if checkpoint.best_model_score is not None:
            metrics["best_score"] = float(checkpoint.best_model_score)
    if trainer.is_global_zero:
        write_text_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log.info("final metrics: %s", metrics)
    return metrics
