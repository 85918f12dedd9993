"""Lightning callbacks specific to LocSens.

``SigmaSchedule`` drives the location-sampling scale ``sigma`` (the paper's normalised units; see
``locsens.geo.sigma_to_km``) of a module that has a ``sigma`` attribute (``LocSens``). The paper starts
at sigma = 1 and decreases it slowly; the released code instead grew it from 0 and wrapped locations
modulo 1 -- we follow the paper.

Schedules over ``total`` units (epochs or optimiser steps), with progress t = min(u / (total - 1), 1)
for the u-th unit (0-based), so the first unit uses exactly ``sigma_start`` and the last (and any
after it) exactly ``sigma_end``:

- ``constant``:    sigma_start throughout (sigma_end ignored);
- ``linear``:      sigma_start + t (sigma_end - sigma_start);
- ``exponential``: geometric interpolation sigma_start (sigma_end / sigma_start)^t; since a geometric
  path never reaches 0, a ``sigma_end`` of 0 is reached through ``sigma_floor``: the path runs from
  sigma_start to sigma_floor and the last unit uses exactly 0;
- ``step``:        ``num_steps`` equal plateaus from sigma_start to sigma_end (both included),
  geometric when ``step_spacing="geometric"`` (with the same floor rule) or linear otherwise.

``total`` defaults to the trainer's ``max_epochs`` (``unit="epoch"``) or ``estimated_stepping_batches``
(``unit="step"``). ``sigma`` and ``sigma_km`` are logged every epoch (and every step for ``unit="step"``).
"""

from __future__ import annotations

import math

import lightning as L

from locsens.geo import sigma_to_km

SCHEDULE_KINDS = ("constant", "linear", "exponential", "step")


class SigmaSchedule(L.Callback):
    def __init__(
        self,
        kind: str = "constant",
        sigma_start: float = 1.0,
        sigma_end: float = 0.0,
        unit: str = "epoch",
        total: int | None = None,
        num_steps: int = 5,
        step_spacing: str = "geometric",
        sigma_floor: float = 0.01,
    ):
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"sigma_schedule.kind={kind!r}; expected one of {SCHEDULE_KINDS}")
        if unit not in ("epoch", "step"):
            raise ValueError(f"sigma_schedule.unit={unit!r}; expected 'epoch' or 'step'")
        if sigma_start < 0 or sigma_end < 0:
            raise ValueError(f"sigma_schedule: sigma_start={sigma_start} and sigma_end={sigma_end} must be >= 0")
        if kind == "exponential" and sigma_start == 0 and sigma_end > 0:
            raise ValueError("sigma_schedule: an exponential schedule cannot start at sigma_start=0")
        if total is not None and total < 1:
            raise ValueError(f"sigma_schedule.total={total} must be >= 1 (or null for the trainer's length)")
        if num_steps < 2:
            raise ValueError(
                f"sigma_schedule.num_steps={num_steps} must be >= 2 (the first plateau is sigma_start, the last sigma_end)"
            )
        if step_spacing not in ("geometric", "linear"):
            raise ValueError(f"sigma_schedule.step_spacing={step_spacing!r}; expected 'geometric' or 'linear'")
        if not sigma_floor > 0:
            raise ValueError(f"sigma_schedule.sigma_floor={sigma_floor} must be > 0")
        self.kind, self.unit, self.total = kind, unit, total
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.num_steps, self.step_spacing, self.sigma_floor = num_steps, step_spacing, float(sigma_floor)

    # ------------------------------------------------------------------------------------------
    def _geometric(self, t: float) -> float:
        """Geometric path from sigma_start to sigma_end at progress t; exact endpoints (floor rule for 0)."""
        if t >= 1.0:
            return self.sigma_end
        if self.sigma_start == 0.0:
            return 0.0
        end = self.sigma_end if self.sigma_end > 0 else min(self.sigma_floor, self.sigma_start)
        return self.sigma_start * (end / self.sigma_start) ** t

    def sigma_at(self, unit_index: int, total: int) -> float:
        """sigma for the ``unit_index``-th epoch/step (0-based) of a run of ``total`` units."""
        if self.kind == "constant":
            return self.sigma_start
        t = 1.0 if total <= 1 else min(max(unit_index, 0) / (total - 1), 1.0)
        if self.kind == "linear":
            return self.sigma_end if t >= 1.0 else self.sigma_start + t * (self.sigma_end - self.sigma_start)
        if self.kind == "exponential":
            return self._geometric(t)
        plateau = min(math.floor(t * self.num_steps), self.num_steps - 1)
        level = plateau / (self.num_steps - 1)
        if self.step_spacing == "linear":
            return self.sigma_end if level >= 1.0 else self.sigma_start + level * (self.sigma_end - self.sigma_start)
        return self._geometric(level)

    def _total(self, trainer: L.Trainer) -> int:
        if self.total is not None:
            return self.total
        if self.unit == "epoch":
            if trainer.max_epochs is None or trainer.max_epochs < 0:
                raise ValueError("sigma_schedule.unit=epoch needs trainer.max_epochs or sigma_schedule.total")
            return trainer.max_epochs
        return max(1, int(trainer.estimated_stepping_batches))

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, unit_index: int) -> None:
        if not hasattr(pl_module, "sigma"):
            raise TypeError(
                f"SigmaSchedule needs a module with a 'sigma' attribute; {type(pl_module).__name__} has none"
            )
        pl_module.sigma = self.sigma_at(unit_index, self._total(trainer))

    def _log(self, pl_module: L.LightningModule, on_step: bool) -> None:
        pl_module.log("sigma", pl_module.sigma, on_step=on_step, on_epoch=not on_step)
        pl_module.log("sigma_km", sigma_to_km(pl_module.sigma), on_step=on_step, on_epoch=not on_step)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.unit == "epoch":
            self._apply(trainer, pl_module, trainer.current_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.unit == "step":
            self._apply(trainer, pl_module, trainer.global_step)
            self._log(pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(pl_module, on_step=False)
