"""Config validation: a composed Hydra config is checked before any work starts.

Hydra rejects unknown *command-line* keys (without ``+``), but a typo inside a yaml file (an
experiment overlay writing ``model.num_negativs``) merges silently and would only fail -- or, worse,
be ignored -- after the stores were loaded. ``validate_train_config`` catches three classes of error
up front, each as an exception that names the full key:

* unknown keys: every node with a ``_target_`` is checked against the signature of the callable it
  names (``inspect.signature``); an unknown key is reported with the closest valid name (difflib).
  Callables taking ``**kwargs`` (e.g. ``WandbLogger``, which forwards to ``wandb.init``) are not
  checked. Top-level keys are checked against what ``train()`` reads (``TRAIN_TOP_LEVEL_KEYS``).
* impossible values (``ConfigError``, a ValueError): non-positive batch sizes, epochs, learning
  rates, negatives or k's, a negative margin or sigma, and names outside the sets the defining
  modules expose (``FUSIONS``, ``LOCATION_ENCODERS``, ``NEGATIVE_MODES``, ``SCHEDULE_KINDS``).
* missing stores (``FileNotFoundError``): ``data.dataset_path`` / ``features_path`` /
  ``embeddings_path`` that do not exist, with the command that makes them.

The checks are explicit rather than structured configs because model configs are open-ended
(``_target_`` picks the class) and the signature is the single source of truth for valid keys.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

HYDRA_SPECIAL_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# Everything train() reads at the top level (config groups + train.yaml's own keys); `hydra` is Hydra's.
TRAIN_TOP_LEVEL_KEYS = ("data", "model", "trainer", "logger", "callbacks", "paths", "experiment", "sweep", "debug",
                        "task_name", "seed", "world", "ckpt_path", "hydra")


class ConfigError(ValueError):
    """An impossible or unknown config value; the message names the full key and what was expected."""


# ---- value rules ---------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def positive_int_or_null(v: Any) -> bool:
    return v is None or positive_int(v)


def positive_number(v: Any) -> bool:
    return _is_number(v) and v > 0


def non_negative_number(v: Any) -> bool:
    return _is_number(v) and v >= 0


def positive_ints(v: Any) -> bool:
    return isinstance(v, (list, tuple, ListConfig)) and len(v) > 0 and all(positive_int(x) for x in v)


def max_epochs_ok(v: Any) -> bool:
    return v is None or positive_int(v) or v == -1  # -1: unlimited (Lightning), bounded by max_steps/max_time


def _one_of(names: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in names), f"one of {', '.join(names)}"


def _train_rules() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """key -> (predicate, what is expected), checked in order (model before data: data.num_negatives
    interpolates model.num_negatives, and the error should name the key the user sets).
    Allowed names come from the modules that define them."""
    from locsens.callbacks import SCHEDULE_KINDS
    from locsens.data.triplets import NEGATIVE_MODES
    from locsens.models.location_encoders import LOCATION_ENCODERS
    from locsens.models.locsens import FUSIONS

    return {
        "seed": (_is_int, "an integer"),
        "model.num_negatives": (positive_int, "a positive integer"),
        "model.margin": (non_negative_number, "a number >= 0"),
        "model.fusion": _one_of(FUSIONS),
        "model.location_encoder": _one_of(LOCATION_ENCODERS),
        "model.location_dropout": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "model.pairwise_products": (lambda v: isinstance(v, bool), "true or false"),
        "model.similarity_skip": (lambda v: isinstance(v, bool), "true or false"),
        "model.grid_table_size": (positive_int, "a positive integer"),
        "model.grid_features": (positive_int, "a positive integer"),
        "model.location_lr_scale": (positive_number, "a positive number"),
        "model.embed_dim": (positive_int_or_null, "a positive integer (or null: filled from the data)"),
        "model.input_dim": (positive_int_or_null, "a positive integer (or null: filled from the data)"),
        "model.num_tags": (positive_int_or_null, "a positive integer (or null: filled from the data)"),
        "model.branch_dim": (positive_int, "a positive integer"),
        "model.hidden": (positive_ints, "a non-empty list of positive integers"),
        "model.val_ks": (positive_ints, "a non-empty list of positive integers (k >= 1)"),
        "model.val_distances_km": (lambda v: isinstance(v, (list, ListConfig)) and all(positive_number(x) for x in v),
                                   "a list of positive distances in km"),
        "model.optimizer.lr": (positive_number, "a positive number"),
        "data.batch_size": (positive_int, "a positive integer"),
        "data.eval_batch_size": (positive_int_or_null, "a positive integer or null"),
        "data.val_batch_size": (positive_int, "a positive integer"),
        "data.num_negatives": (positive_int, "a positive integer"),
        "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "data.negative_mode": _one_of(NEGATIVE_MODES),
        "data.tag_swap_prob": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "data.tag_negative_power": (non_negative_number, "a number >= 0"),
        "data.location_swap_prob": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "data.val_tagging_images": (positive_int, "a positive integer"),
        "data.val_retrieval_queries": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        "trainer.max_epochs": (max_epochs_ok, "a positive integer (or -1 for unlimited, with max_steps)"),
        "trainer.max_steps": (lambda v: v is None or v == -1 or positive_int(v), "a positive integer or -1"),
        "trainer.num_nodes": (positive_int, "a positive integer"),
        "callbacks.sigma_schedule.kind": _one_of(SCHEDULE_KINDS),
        "callbacks.sigma_schedule.num_steps": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
        "callbacks.sigma_schedule.sigma_floor": (positive_number, "a positive number"),
        "callbacks.sigma_schedule.total": (positive_int_or_null, "a positive integer or null"),
    }


def _select(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key, resolving interpolations; absent keys are (False, None)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_rules(cfg: DictConfig, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    for key, (ok, expected) in rules.items():
        present, value = _select(cfg, key)
        if present and not ok(value):
            raise ConfigError(f"{key}={value!r}: expected {expected}")


def _check_sigmas(cfg: DictConfig, roots: tuple[str, ...] = ("model", "data", "callbacks")) -> None:
    """Every ``sigma*`` number (model.sigma, any sigma schedule's sigma_start / sigma_end / ...) is >= 0."""
    for root in roots:
        if root not in cfg or not isinstance(cfg[root], DictConfig):
            continue
        for key in _sigma_keys(OmegaConf.to_container(cfg[root], resolve=False), root):
            value = _select(cfg, key)[1]  # resolved only here: other keys may need Hydra's resolvers
            if value is not None and not non_negative_number(value):
                raise ConfigError(f"{key}={value!r}: expected a number >= 0 (sigma is a location-sampling scale)")


def _sigma_keys(node: dict, prefix: str) -> Iterator[str]:
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _sigma_keys(value, f"{prefix}.{key}")
        elif str(key).startswith("sigma"):
            yield f"{prefix}.{key}"


# ---- unknown keys --------------------------------------------------------------------------------
def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _check_target_keys(node: dict, where: str) -> None:
    """Keys of every ``_target_`` node under ``node`` (a plain, unresolved container) must be parameters."""
    if not isinstance(node, dict):
        return
    if "_target_" in node:
        target = node["_target_"]
        try:
            obj = get_object(target)
        except Exception as err:  # ImportError, AttributeError: Hydra wraps them differently per version
            raise ConfigError(f"{where}._target_={target!r} cannot be imported: {err}") from err
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):  # builtins without a signature: nothing to check against
            params = None
        if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            valid = [name for name, p in params.items() if p.kind not in (inspect.Parameter.VAR_POSITIONAL,)]
            for key in node:
                if key not in HYDRA_SPECIAL_KEYS and key not in params:
                    raise ConfigError(f"{where}.{key}: not a parameter of {target}{_did_you_mean(key, valid)}")
    for key, child in node.items():
        if isinstance(child, dict):
            _check_target_keys(child, f"{where}.{key}")


def check_unknown_keys(cfg: DictConfig, top_level: tuple[str, ...] = TRAIN_TOP_LEVEL_KEYS) -> None:
    """Fail on a key that no callable takes (with the closest valid name) or an unknown top-level key."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for key in plain:
        if key not in top_level:
            raise ConfigError(f"{key}: unknown top-level key{_did_you_mean(key, list(top_level))}")
    for key, child in plain.items():
        if key != "hydra" and isinstance(child, dict):
            _check_target_keys(child, key)


# ---- stores --------------------------------------------------------------------------------------
def _store_hint(cfg: DictConfig, key: str) -> str:
    world = cfg.get("world", "<world>")
    if key.endswith("embeddings_path"):
        return (f"export it from a trained MCC run: `python train.py experiment=mcc world={world}` then "
                f"`python export.py world={world} checkpoint=<run dir>/checkpoints/last.ckpt`")
    return f"build the world with `python prepare.py world={world}` (or point {key} at an existing store)"


def check_stores_exist(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """Each configured store path exists; otherwise FileNotFoundError naming the key, path and the fix."""
    for key in keys:
        present, path = _select(cfg, key)
        if present and path is not None and not Path(str(path)).is_file():
            raise FileNotFoundError(f"{key}: {path} does not exist; {_store_hint(cfg, key)}")


# ---- entry points --------------------------------------------------------------------------------
def validate_train_config(cfg: DictConfig) -> None:
    """Check a composed train config (conf/train.yaml) before any work; raises ConfigError / FileNotFoundError."""
    check_unknown_keys(cfg)
    _check_rules(cfg, _train_rules())
    _check_sigmas(cfg)
    check_stores_exist(cfg, ("data.dataset_path", "data.features_path", "data.embeddings_path"))


def validate_evaluate_config(cfg: DictConfig) -> None:
    """Check a composed evaluate config (conf/evaluate.yaml): impossible k's, sizes, distances, the store."""
    from locsens.tracking import WANDB_MODES

    ks_ok = (positive_ints, "a non-empty list of positive integers (k >= 1)")
    _check_rules(cfg, {
        "tagging.ks": ks_ok,
        "retrieval.k": (positive_int, "a positive integer (k >= 1)"),
        "retrieval.thresholds_km": (lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0 and all(positive_number(x) for x in v),
                                    "a non-empty list of positive distances in km (.inf allowed)"),
        "retrieval.min_query_images": (positive_int, "a positive integer"),
        "retrieval.max_queries": (positive_int_or_null, "a positive integer or null (all queries)"),
        "retrieval.chunk_queries": (positive_int, "a positive integer"),
        "chunk_images": (positive_int, "a positive integer"),
        "limit_test_images": (positive_int_or_null, "a positive integer or null (the whole test split)"),
        "retrieval.limit_candidates": (positive_int_or_null, "a positive integer or null (the tagging images)"),
        "wandb.mode": _one_of(WANDB_MODES),
    })
    check_stores_exist(cfg, ("dataset",))


__all__ = ["ConfigError", "TRAIN_TOP_LEVEL_KEYS", "check_stores_exist", "check_unknown_keys", "validate_evaluate_config",
           "validate_train_config"]
