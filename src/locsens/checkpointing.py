"""Checkpoints: written atomically at every epoch end, resumed exactly, loaded safely.

:class:`RunCheckpoint` is the training callback behind every run directory's ``checkpoints/``:

* ``last.ckpt`` is rewritten at the end of EVERY training epoch (after that epoch's validation), and
  ``epoch<NNN>.ckpt`` holds the best epoch by the monitored validation metric. Both are written to a
  temporary file in ``checkpoints/`` and renamed into place (``locsens.files.atomic_path``): a kill
  or a full disk leaves the previous file intact. On SIGTERM (SLURM preemption) Lightning stops after
  the current batch and ``train()`` exits with 143; ``last.ckpt`` is then the end of the last complete
  epoch, so a requeued run loses at most the epoch it was in.
* Its state (saved in every checkpoint) holds the best score, epoch and file and the per-epoch
  metric history. Resuming (``ckpt_path=...``) into ANY run directory restores them: the best
  checkpoint of the earlier run is copied into the new ``checkpoints/`` (so ``metrics.json`` names a
  file of this run), ``csv/metrics.csv`` continues the earlier run's file up to the checkpoint's
  epoch (the killed epoch's partial rows are dropped), and the W&B run is resumed by id (``train()``
  reads it from the checkpoint). Each epoch's global RNGs are seeded from (seed, epoch, rank) at its
  first batch, so with the same seed a killed and resumed run ends with exactly the uninterrupted
  run's metrics and best weights.
* Every checkpoint carries a ``locsens`` record: the model class, what it was trained on (the
  content ids of its stores, see :mod:`locsens.artifacts`), the run directory and the W&B run id.

:func:`load_checkpoint` / :func:`load_model` are the only ways the project reads a checkpoint:
``torch.load(..., weights_only=True)`` always passed explicitly (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
cannot turn a crafted file into code execution), the model class taken from an allow-list of
locsens' own classes (a checkpoint cannot make us import a module it names), and errors that name
the file and say what it is or is not.
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
import random
import uuid
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from locsens.files import atomic_path, copy_atomic

log = logging.getLogger(__name__)

RECORD_KEY = "locsens"
LAST = "last.ckpt"
# the only classes a checkpoint may name: class path -> kind ("agnostic": MLC / MCC / HER, "locsens")
MODEL_CLASSES = {
    "locsens.models.mcc.MCC": "agnostic",
    "locsens.models.mlc.MLC": "agnostic",
    "locsens.models.her.HER": "agnostic",
    "locsens.models.locsens.LocSens": "locsens",
    "locsens.models.geo_prior.GeoPrior": "prior",
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, unsafe or of the wrong kind; the message names the file."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the run is not finished and saves nothing more."""


def class_path(obj_or_cls) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def record_model(module: L.LightningModule, checkpoint: dict) -> None:
    """The model's part of a checkpoint's ``locsens`` record: its class and what it was trained on (the
    datamodule's store ids). Called from the models' ``on_save_checkpoint``, so every checkpoint a
    locsens model is saved to (by any Lightning path) can be loaded and checked."""
    trainer = module._trainer
    datamodule = trainer.datamodule if trainer is not None else None
    made_from = datamodule.lineage() if datamodule is not None and hasattr(datamodule, "lineage") else {}
    checkpoint.setdefault(RECORD_KEY, {}).update(model_class=class_path(module), made_from=made_from)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, expect: str | None = None) -> dict:
    """The checkpoint dict of ``path``, read with ``weights_only=True``.

    ``expect``: ``"agnostic"`` or ``"locsens"`` (the kind of model it must hold) or None (any of
    locsens' models). Raises :class:`CheckpointError` naming the file for a missing, truncated,
    garbage or unsafe file, one not written by locsens' ``train()``, or one of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((line for line in first if "Unsupported" in line or "GLOBAL" in line), first[0] if first else "")
        if "Unsupported global" in str(e) or "GLOBAL" in detail:  # a real pickle naming a class or function
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python objects beyond tensors and plain containers "
                f"({detail.strip()[:200]}); a checkpoint written by locsens' train.py never does, and "
                "locsens does not execute code from checkpoints"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable: {detail.strip()[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:  # a zip archive cut short, a stream that ends early
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a complete PyTorch checkpoint (truncated or corrupt: {reason})") from None
    except Exception as e:  # random bytes make the unpickler fail in many ways
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable: {reason})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry)")
    record = ckpt.get(RECORD_KEY)
    if not isinstance(record, dict) or "model_class" not in record:
        raise CheckpointError(
            f"{path}: not written by locsens' train.py (no '{RECORD_KEY}' record naming its model class)"
        )
    kind = MODEL_CLASSES.get(record["model_class"])
    if kind is None:
        raise CheckpointError(
            f"{path}: names model class {record['model_class']!r}, which is not one of locsens' models "
            f"({', '.join(MODEL_CLASSES)}); refusing to import it"
        )
    if expect is not None and kind != expect:
        want = "a LocSens model" if expect == "locsens" else "an MLC, MCC or HER model"
        raise CheckpointError(f"{path}: is a checkpoint of {record['model_class'].rsplit('.', 1)[-1]}, expected {want}")
    return ckpt


def checkpoint_record(path: str | Path, expect: str | None = None) -> dict:
    """The ``locsens`` record of a checkpoint (model class, lineage, run directory, W&B id)."""
    return load_checkpoint(path, expect)[RECORD_KEY]


def model_class(name: str) -> type:
    if name not in MODEL_CLASSES:
        raise CheckpointError(f"model class {name!r} is not one of locsens' models ({', '.join(MODEL_CLASSES)})")
    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def load_model(path: str | Path, expect: str | None = None) -> tuple[L.LightningModule, dict]:
    """(model in eval mode on the CPU, its checkpoint dict). The model is rebuilt from the checkpoint's
    own hyperparameters and its weights loaded strictly (a mismatch names the file and the keys)."""
    path = Path(path)
    ckpt = load_checkpoint(path, expect)
    cls = model_class(ckpt[RECORD_KEY]["model_class"])
    hparams = dict(ckpt.get("hyper_parameters") or {})
    try:
        # first on the meta device (no memory): hyperparameters edited to num_tags=1e9 must not exhaust the
        # machine before the weights can say they do not fit
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in cls(**hparams).state_dict().items()}
        saved = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
        differ = sorted(k for k in set(shapes) & set(saved) if shapes[k] != saved[k])
        if differ:
            raise CheckpointError(
                f"{path}: its weights do not fit {cls.__name__} built from its own hyperparameters: "
                + "; ".join(f"{k} is {saved[k]} in the file, {shapes[k]} from the hyperparameters" for k in differ[:3])
            )
        model = cls(**hparams)
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: its hyperparameters do not build {cls.__name__}: {e}") from None
    model.on_load_checkpoint(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: its weights do not fit {cls.__name__} built from its own hyperparameters: "
            f"{str(e).splitlines()[0]}"
        ) from None
    return model.eval(), ckpt


# --------------------------------------------------------------------------------------------
# randomness per epoch
# --------------------------------------------------------------------------------------------
def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed torch's, numpy's and Python's global RNGs from (seed, epoch, rank): an epoch then draws the
    same numbers (location sampling, dropout) whether the run was resumed before it or not."""
    value = int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0])
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


# --------------------------------------------------------------------------------------------
# the callback
# --------------------------------------------------------------------------------------------
class RunCheckpoint(L.Callback):
    """Best-by-``monitor`` and last checkpoints of a run (see the module docstring).

    Args:
        dirpath: the run's ``checkpoints/`` folder.
        monitor: validation metric that picks the best epoch (e.g. ``val/A@10``); mode ``max`` or ``min``.
        filename: name pattern of the best checkpoint (``{epoch}`` is filled in).
        seed: the run's seed; each epoch's RNGs are seeded from (seed, epoch, rank) at its first batch.
    """

    def __init__(
        self,
        dirpath: str,
        monitor: str = "val/A@10",
        mode: str = "max",
        filename: str = "epoch{epoch:03d}",
        seed: int = 0,
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"RunCheckpoint mode={mode!r}; expected 'max' or 'min'")
        self.dirpath, self.monitor, self.mode, self.filename, self.seed = (
            Path(dirpath),
            monitor,
            mode,
            filename,
            int(seed),
        )
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_path: str | None = None
        self.history: list[dict[str, float]] = []  # one row per completed epoch
        self.resumed_from: dict | None = None
        self.run_id = uuid.uuid4().hex  # one training run across its resumes (kept in every checkpoint)
        self.settings: dict | None = None  # train(): what a resume must share with this run (seed, data, ...)
        self.resume_checkpoint: Path | None = None  # train(): the checkpoint this run resumes from
        self._validated: tuple[int, float] | None = None  # (epoch, monitored value) of this epoch's validation
        self._pending: dict | None = None  # state restored from a checkpoint, applied when training starts

    # ---- state carried in every checkpoint ------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        csv = [{"path": str(lg.metrics_path), "rows": list(lg.rows)} for lg in self._csv_loggers()]
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_path": self.best_path,
            "best_name": Path(self.best_path).name if self.best_path else None,
            "run_id": self.run_id,
            "history": self.history,
            "csv": csv,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        wandb_ids = [
            lg.version for lg in trainer.loggers if type(lg).__name__ == "WandbLogger" and lg._experiment is not None
        ]
        checkpoint.setdefault(RECORD_KEY, {}).update(
            run_dir=str(self.dirpath.parent),
            run_id=self.run_id,
            settings=self.settings,
            wandb_run_id=wandb_ids[0] if wandb_ids else None,
            epoch=int(trainer.current_epoch),
        )

    def _csv_loggers(self) -> list:
        trainer = getattr(self, "_trainer", None)
        return [lg for lg in (trainer.loggers if trainer is not None else []) if hasattr(lg, "restore")]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            seed_epoch(self.seed, trainer.current_epoch, trainer.global_rank)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(torch.as_tensor(loss).detach()).all():
            done = (
                f"{self.dirpath / LAST} holds the end of epoch {int(self.history[-1]['epoch'])}"
                if self.history
                else "no epoch finished"
            )
            raise TrainingDiverged(
                f"training diverged: the loss is {float(torch.as_tensor(loss).detach().float().mean())} at epoch "
                f"{trainer.current_epoch}, batch {batch_idx} (step {trainer.global_step}); {done}. Lower "
                "model.optimizer.lr (or clip gradients: trainer.gradient_clip_val) and train again"
            )

    # ---- resume ------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_fit_start, not on_train_start: a resumed run that has nothing left to train still reports its best
        state, self._pending = self._pending, None
        if state is None:
            return
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            raise ValueError(
                f"the resumed checkpoint picked its best by {state.get('monitor')} ({state.get('mode')}), "
                f"this run by {self.monitor} ({self.mode}); resume with the same callbacks config"
            )
        self.history = [dict(row) for row in state["history"]]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.run_id = state.get("run_id") or self.run_id
        best_name = state.get("best_name") or (Path(state["best_path"]).name if state.get("best_path") else None)
        self.best_path = self._resumed_best(best_name) if best_name else None
        epoch = int(self.history[-1]["epoch"]) if self.history else -1
        for logger, saved in zip(self._csv_loggers(), state.get("csv", [])):
            logger.restore(saved["path"], saved["rows"], last_epoch=epoch)
        self.resumed_from = {
            "epoch": int(self.history[-1]["epoch"]) if self.history else None,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
        }
        log.info(
            "resumed after epoch %s (best %s=%s at epoch %s)",
            self.resumed_from["epoch"],
            self.monitor,
            self.best_score,
            self.best_epoch,
        )

    def _resumed_best(self, name: str) -> str:
        """This run's best checkpoint after a resume. It lives beside the checkpoint resumed from (paths are
        never followed: a moved or copied run keeps its own files); resuming into another directory copies
        it here. The file must be this training run's best epoch (its record's run id and epoch)."""
        source = (Path(self.resume_checkpoint).parent if self.resume_checkpoint else self.dirpath) / name
        what = f"the resumed run's best checkpoint {source} (epoch {self.best_epoch}, {self.monitor}={self.best_score})"
        if not source.is_file():
            raise FileNotFoundError(f"{what} is missing: restore it, or start a new run")
        record = load_checkpoint(source)[RECORD_KEY]
        if record.get("run_id", self.run_id) != self.run_id or record.get("epoch", self.best_epoch) != self.best_epoch:
            raise CheckpointError(
                f"{what} is not that run's best: it holds epoch {record.get('epoch')} of run {record.get('run_id')} "
                f"(expected epoch {self.best_epoch} of run {self.run_id}); restore the run's own file"
            )
        target = self.dirpath / name
        if source.resolve() != target.resolve() and trainer_is_global_zero(self._trainer):
            copy_atomic(source, target)
        return str(target)

    # ---- saving ------------------------------------------------------------------------------
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        self._validated = (trainer.current_epoch, float(trainer.callback_metrics[self.monitor]))

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_score is None:
            return True
        return value > self.best_score if self.mode == "max" else value < self.best_score

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        epoch = int(trainer.current_epoch)
        if self.history and self.history[-1]["epoch"] >= epoch:  # Lightning replays the restored epoch's end
            return
        validated = self._validated if self._validated is not None and self._validated[0] == epoch else None
        # validation metrics ("val/...") only in the epochs that validated (callback_metrics keeps stale ones)
        row = {"epoch": float(epoch), "step": float(trainer.global_step)}
        row.update(
            {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if torch.as_tensor(v).numel() == 1 and (validated is not None or not k.startswith("val/"))
            }
        )
        self.history.append(row)
        if validated is not None and self._improved(validated[1]):
            previous = self.best_path
            self.best_score, self.best_epoch = validated[1], epoch
            self.best_path = str(self.dirpath / f"{self.filename.format(epoch=epoch)}.ckpt")
            self._save(trainer, Path(self.best_path))
            if previous and previous != self.best_path and trainer_is_global_zero(trainer):
                Path(previous).unlink(missing_ok=True)
        self._save(trainer, self.dirpath / LAST)

    def _save(self, trainer: L.Trainer, path: Path) -> None:
        """Atomic save: every rank builds the checkpoint (strategies gather state), rank 0 writes it."""
        if trainer_is_global_zero(trainer):
            with atomic_path(path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)
        else:
            trainer.save_checkpoint(
                self.dirpath / f".unused-rank{trainer.global_rank}", weights_only=False
            )  # collective; rank 0 writes
        trainer.strategy.barrier("RunCheckpoint._save")

    # ---- what train() reports -----------------------------------------------------------------
    def summary(self) -> dict:
        """Final metrics (the last value of each metric over the history), the best checkpoint and epoch."""
        final: dict[str, float] = {}
        for row in self.history:
            final.update({k: v for k, v in row.items() if k not in ("epoch", "step")})
        return {
            **final,
            "best_checkpoint": self.best_path,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "last_checkpoint": str(self.dirpath / LAST) if self.history else None,
            "epochs": len(self.history),
            "monitor": self.monitor,
            "resumed_from": self.resumed_from,
        }


def trainer_is_global_zero(trainer: L.Trainer | None) -> bool:
    return trainer is None or trainer.is_global_zero


__all__ = [
    "CheckpointError",
    "TrainingDiverged",
    "LAST",
    "MODEL_CLASSES",
    "RECORD_KEY",
    "RunCheckpoint",
    "checkpoint_record",
    "class_path",
    "load_checkpoint",
    "load_model",
    "model_class",
]
