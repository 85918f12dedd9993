"""Callbacks that end a training process at a chosen point, as a crash or a scheduler would (used by the faults suite)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAt(L.Callback):
    """Send ``signal`` (SIGKILL: no cleanup at all) to this process at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int, signal_name: str = "SIGKILL"):
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)
