"""Optimisers from config: the one place a model's ``model.optimizer`` / ``model.scheduler`` become objects.

A spec is a Hydra ``_partial_`` callable (``optimizer(params=...)``) or the config node itself (a dict with
``_target_``, as a model built with ``_recursive_: false`` receives it). Neither is saved as a
hyperparameter, so a checkpoint reloads without them (for inference and export).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn


def _call(spec: Any, **kwargs):
    if spec is None:
        return None
    if callable(spec):
        return spec(**kwargs)
    from hydra.utils import instantiate

    spec = OmegaConf.create(spec) if not isinstance(spec, DictConfig) else spec
    return instantiate(spec, _partial_=True)(**kwargs)  # tensors go to the call, not through Hydra's config merge


def base_lr(spec: Any) -> float | None:
    """The learning rate a spec sets (``lr``), or None."""
    if spec is None:
        return None
    if callable(spec):
        return getattr(spec, "keywords", {}).get("lr")
    return dict(spec).get("lr")


def scaled_parameter_groups(module: nn.Module, spec: Any) -> list[dict]:
    """One group, plus one per submodule with an ``lr_scale != 1`` (e.g. a learned location grid): its own
    parameters at ``lr * lr_scale`` and without weight decay."""
    scaled = [m for m in module.modules() if getattr(m, "lr_scale", 1.0) != 1.0 and any(True for _ in m.parameters())]
    if not scaled:
        return [{"params": list(module.parameters())}]
    lr = base_lr(spec)
    if lr is None:
        raise ValueError(
            "a submodule has lr_scale != 1, which needs the optimizer's lr in its config (model.optimizer.lr)"
        )
    taken = {id(p) for m in scaled for p in m.parameters()}
    groups = [{"params": [p for p in module.parameters() if id(p) not in taken]}]
    groups += [{"params": list(m.parameters()), "lr": lr * m.lr_scale, "weight_decay": 0.0} for m in scaled]
    return groups


def configure(optimizer: Any, scheduler: Any, param_groups: list[dict] | Callable, owner: str):
    """What ``LightningModule.configure_optimizers`` returns for these specs (scheduler stepped per epoch)."""
    if optimizer is None:
        raise ValueError(f"{owner} has no optimizer (built by load_from_checkpoint / load_model?): set model.optimizer")
    opt = _call(optimizer, params=param_groups)
    if scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": _call(scheduler, optimizer=opt), "interval": "epoch"}}


__all__ = ["base_lr", "configure", "scaled_parameter_groups"]
