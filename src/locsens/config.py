"""Config validation: a composed Hydra config is checked before any work starts, and means what it says.

Every entry point validates its config first (``validate_train_config``, ``validate_prepare_config``,
``validate_evaluate_config``, ``validate_export_config``, ``validate_extract_config``):

* **typed values**: ``no`` / ``false`` / ``off`` / ``0`` are false and ``yes`` / ``true`` / ``on`` / ``1``
  true for every boolean key; ``seed=abc`` or ``retrieval.k=ten`` is an error naming the key. The
  non-train entry points are checked against a dataclass schema (an OmegaConf structured merge:
  the library does the typing); ``_target_`` nodes of the train config are typed by the signature
  annotations of the callable they name. A string where a list is expected (``source.tsv=/path``)
  becomes a one-element list.

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

import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from locsens.files import require_file

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's config tree
HYDRA_SPECIAL_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# Everything train() reads at the top level (config groups + train.yaml's own keys); `hydra` is Hydra's.
TRAIN_TOP_LEVEL_KEYS = (
    "data",
    "model",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "experiment",
    "sweep",
    "debug",
    "task_name",
    "seed",
    "world",
    "ckpt_path",
    "hydra",
)


class ConfigError(ValueError):
    """An impossible or unknown config value; the message names the full key and what was expected."""


def compose(
    config_name: str, overrides=(), config_dir: str | Path = CONF_DIR, return_hydra_config: bool = False
) -> DictConfig:
    """The repository's config ``config_name`` with ``overrides``, as its entry point composes it (for
    notebooks, benchmarks and tests; the entry points themselves go through ``@hydra.main``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def build_model(overrides=(), **data_dims):
    """``cfg.model`` of the train config with ``overrides`` (e.g. ``["experiment=locsens_paper"]``), built with
    the data-dependent dimensions a datamodule would fill (``embed_dim=300``, ``input_dim``, ``num_tags``)."""
    from hydra.utils import instantiate

    return instantiate(compose("train", overrides).model, **data_dims)


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

    return {
        "seed": (_is_int, "an integer"),
        "model.num_negatives": (positive_int, "a positive integer"),
        "model.margin": (non_negative_number, "a number >= 0"),
        "model.location_dropout": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "model.location_encoder.lr_scale": (positive_number, "a positive number"),
        "model.location_encoder.table_size": (positive_int, "a positive integer"),
        "model.location_encoder.features": (positive_int, "a positive integer"),
        "model.embed_dim": (positive_int_or_null, "a positive integer (or null: filled from the data)"),
        "model.input_dim": (positive_int_or_null, "a positive integer (or null: filled from the data)"),
        "model.num_tags": (positive_int_or_null, "a positive integer (or null: filled from the data)"),
        "model.image_branch.out_dim": (positive_int, "a positive integer"),
        "model.tag_branch.out_dim": (positive_int, "a positive integer"),
        "model.scorer.hidden": (positive_ints, "a non-empty list of positive integers"),
        "model.val_ks": (positive_ints, "a non-empty list of positive integers (k >= 1)"),
        "model.val_distances_km": (
            lambda v: isinstance(v, (list, ListConfig)) and all(positive_number(x) for x in v),
            "a list of positive distances in km",
        ),
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


# ---- typed values ---------------------------------------------------------------------------------
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "y", "1"), ("false", "no", "off", "n", "0")


def as_bool(value: Any, key: str) -> bool:
    """``value`` as a bool: a bool, 0/1, or a word of ``TRUE_WORDS`` / ``FALSE_WORDS`` (any case); else ConfigError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ConfigError(f"{key}={value!r}: expected true or false (also yes/no, on/off, 1/0)")


def _coerce(value: Any, kind: type, key: str) -> Any:
    """A string from the command line as ``kind`` (bool, int, float); other values unchanged."""
    if kind is bool:
        return as_bool(value, key)
    if not isinstance(value, str):
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    try:
        return kind(value) if kind is float else int(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}") from None


def _simple_type(annotation: Any) -> type | None:
    """bool / int / float for an annotation of exactly that type (or Optional of it), else None."""
    if annotation in (bool, int, float):
        return annotation
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if (origin is typing.Union or isinstance(annotation, types.UnionType)) and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return inner if inner in (bool, int, float) else None
    return None


def _annotations(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # unresolvable forward references, builtins: nothing to type against
        return {}


def coerce_target_values(cfg: DictConfig, root: str = "") -> None:
    """Type the values of every ``_target_`` node in place from its callable's annotations (bool / int / float)."""
    for key in list(cfg.keys()):
        child = cfg._get_node(key)
        full = f"{root}.{key}" if root else str(key)
        if isinstance(child, DictConfig):
            coerce_target_values(child, full)
    if "_target_" not in cfg:
        return
    try:
        hints = _annotations(get_object(cfg._target_))
    except Exception:
        return
    for key in list(cfg.keys()):
        kind = _simple_type(hints.get(str(key)))
        node = cfg._get_node(key)
        if kind is None or node is None or node._is_interpolation() or node._is_missing():
            continue
        value = node._value()
        if value is None:
            continue
        new = _coerce(value, kind, f"{root}.{key}" if root else str(key))
        if new is not value:
            with open_dict(cfg):
                cfg[key] = new


# ---- schemas of the other entry points ----------------------------------------------------------
@dataclass
class PathsConfig:
    data_dir: str = "data"
    world_dir: str = "data/demo"
    log_dir: str = "outputs"
    output_dir: str | None = None


@dataclass
class IngestConfig:
    vocab_size: int = 100_000
    drop_top: int = 10
    min_tags: int = 1
    max_tags: int = 15
    wordlist: str | None = None
    split: dict[str, Any] = field(
        default_factory=lambda: {"test": 0.1, "val": 0.05, "by": "random", "cell_resolution": 2}
    )
    dedupe_tags: bool = False
    strict: bool = False


@dataclass
class SourceConfig:
    kind: str = "world"
    size: str | None = None  # world
    n_photos: int | None = None  # world
    feature_dim: int = 512  # world
    tsv: list[str] = field(default_factory=list)  # yfcc
    features: str | None = None  # yfcc
    vocab_size: int = 100_000  # the source's default for ingest.vocab_size (the paper: 100,000; world: 10,000)


@dataclass
class PrepareConfig:
    world: str = "demo"
    seed: int = 0
    overwrite: bool = False
    dataset_path: str = "${paths.world_dir}/dataset.h5"
    features_path: str = "${paths.world_dir}/features.h5"
    paths: PathsConfig = field(default_factory=PathsConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)


@dataclass
class TagShortlistConfig:
    agnostic: int = 100  # the agnostic model's top-K tags
    prior: int = 50  # the place prior's top-P tags


@dataclass
class ImageShortlistConfig:
    agnostic: int = 500  # the agnostic model's top-K images for the tag
    nearest: int = 500  # the K' candidates nearest the query location


@dataclass
class TaggingConfig:
    ks: list[int] = field(default_factory=lambda: [1, 10, 50])
    shortlist: TagShortlistConfig | None = None
    place_consistency_k: int = 10  # the top-k whose place names are checked (locsens.metrics.places)
    place_consistency_town_km: float = 100.0  # a predicted town within this distance of the photo is not wrong


@dataclass
class RetrievalConfig:
    k: int = 10
    thresholds_km: list[float] = field(default_factory=lambda: [math.inf, 2500.0, 750.0, 200.0, 25.0, 1.0])
    min_query_images: int = 10
    exclude_query_image: bool = False
    max_queries: int | None = None
    limit_candidates: int | None = None
    chunk_queries: int = 64
    shortlist: ImageShortlistConfig | None = None


@dataclass
class ShardConfig:
    index: int = 0  # this process's shard, 0 <= index < count
    count: int = 1  # 1 = the whole evaluation in this process
    dir: str | None = None  # where the shards meet and the merged results land (needed when count > 1)


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "locsens"
    entity: str | None = None
    mode: str = "offline"


@dataclass
class EvaluateConfig:
    world: str = "demo"
    seed: int = 0
    dataset_path: str = "${paths.world_dir}/dataset.h5"
    output_dir: str = "${hydra:runtime.output_dir}"
    limit_test_images: int | None = None
    chunk_images: int = 512
    runs: list[str] = field(default_factory=list)
    locsens_dtype: str = "auto"
    overwrite: bool = False
    methods: dict[str, Any] = field(default_factory=dict)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ExportConfig:
    world: str = "demo"
    checkpoint: str = "???"
    dataset_path: str = "${paths.world_dir}/dataset.h5"
    features_path: str = "${paths.world_dir}/features.h5"
    embeddings_path: str | None = None
    overwrite: bool = False
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class BackboneConfig:
    name: str = "efficientnet_lite0"
    weights: str | None = None


@dataclass
class ExtractConfig:
    images: str = "???"
    features_path: str = "???"
    batch_size: int = 64
    num_workers: int = 4
    flush_every: int = 20
    dtype: str = "float32"
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = True
    overwrite: bool = False
    restart: bool = False
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ExploreConfig:
    run: str = "???"
    eval: list[str] = field(default_factory=list)
    dataset_path: str | None = None
    images: str | None = None
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8765


@dataclass
class TagConfig:
    image: str = "???"
    lat: float = "???"  # type: ignore[assignment]
    lon: float = "???"  # type: ignore[assignment]
    run: str = "???"
    k: int = 10
    compare: list[Any] = field(default_factory=list)
    backbone: BackboneConfig | None = None
    weights: str | None = None
    dtype: str = "fp32"


def _field_types(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)  # resolves the string annotations of `from __future__ import annotations`


def _list_keys(schema: type, prefix: str = "") -> Iterator[str]:
    for name, kind in _field_types(schema).items():
        if dataclasses.is_dataclass(kind):
            yield from _list_keys(kind, f"{prefix}{name}.")
        elif typing.get_origin(kind) is list:
            yield f"{prefix}{name}"


def _schema_keys(schema: type, key: str) -> list[str]:
    """Valid keys at the dotted position ``key`` of a schema (for did-you-mean)."""
    node = schema
    for part in key.split(".")[:-1]:
        sub = _field_types(node).get(part)
        if typing.get_origin(sub) in (typing.Union, types.UnionType):  # an optional group: `X | None`
            sub = next((a for a in typing.get_args(sub) if dataclasses.is_dataclass(a)), None)
        if sub is None or not dataclasses.is_dataclass(sub):
            return []
        node = sub
    return list(_field_types(node))


def typed_config(cfg: DictConfig, schema: type) -> DictConfig:
    """``cfg`` merged into ``schema`` (a dataclass): typed values, unknown keys named with a did-you-mean,
    strings where a list is expected taken as one-element lists. Returns the typed config."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    for key in _list_keys(schema):
        parts = key.split(".")
        node = plain
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str) and not node[parts[-1]].startswith("${"):
            node[parts[-1]] = [node[parts[-1]]]
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), plain)
    except ConfigKeyError as e:
        key = str(e.full_key or e.key)
        raise ConfigError(
            f"{key}: unknown key{_did_you_mean(key.rsplit('.', 1)[-1], _schema_keys(schema, key))}"
        ) from None
    except ValidationError as e:
        key = str(e.full_key or e.key)
        present, value = _select(OmegaConf.create(plain), key)
        expected = str(e).splitlines()[0]
        raise ConfigError(f"{key}={value!r}: {expected}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    OmegaConf.set_struct(typed, False)
    return typed


# ---- stores --------------------------------------------------------------------------------------
def _store_hint(cfg: DictConfig, key: str) -> str:
    world = cfg.get("world", "<world>")
    if key.endswith("embeddings_path"):
        return (
            f"export it from a trained MCC run: `python train.py experiment=mcc world={world}` then "
            f"`python export.py world={world} checkpoint=<run dir>/checkpoints/last.ckpt`"
        )
    return f"build the world with `python prepare.py world={world}` (or point {key} at an existing store)"


def check_stores_exist(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    """Each configured store path exists; otherwise FileNotFoundError naming the key, path and the fix."""
    for key in keys:
        present, path = _select(cfg, key)
        if present and path is not None and not Path(str(path)).is_file():
            what = "is a directory, expected a store file" if Path(str(path)).is_dir() else "does not exist"
            raise FileNotFoundError(f"{key}: {path} {what}; {_store_hint(cfg, key)}")


# ---- entry points --------------------------------------------------------------------------------
def validate_train_config(cfg: DictConfig) -> None:
    """Check a composed train config (conf/train.yaml) before any work, typing its values in place;
    raises ConfigError / FileNotFoundError."""
    check_unknown_keys(cfg)
    for key, kind in (("seed", int),):
        if key in cfg and cfg._get_node(key) is not None and not cfg._get_node(key)._is_interpolation():
            cfg[key] = _coerce(cfg[key], kind, key)
    coerce_target_values(cfg)
    _check_rules(cfg, _train_rules())
    _check_sigmas(cfg)
    _check_bounded(cfg)
    check_stores_exist(cfg, ("data.dataset_path", "data.features_path", "data.embeddings_path"))


def _check_bounded(cfg: DictConfig) -> None:
    """max_epochs=-1 (unlimited) must come with another bound: a run that never ends never finishes."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps") in (None, -1) and not trainer.get("max_time"):
        raise ConfigError(
            "trainer.max_epochs=-1 (unlimited) needs a bound: set trainer.max_steps or trainer.max_time, "
            "or a positive trainer.max_epochs"
        )


def _split_ok(v: Any) -> bool:
    """Split sizes (a count >= 1 (int) or a fraction in (0, 1) (float)), how they are drawn (``by``) and,
    for cells, the H3 resolution."""
    from locsens.data.ingest import SPLIT_BY

    sizes = {k: x for k, x in v.items() if k in ("test", "val")} if isinstance(v, dict) else {}
    return (
        isinstance(v, dict)
        and set(v) <= {"test", "val", "by", "cell_resolution"}
        and all((_is_int(x) and x >= 1) or (isinstance(x, float) and 0 < x < 1) for x in sizes.values())
        and v.get("by", "random") in SPLIT_BY
        and (_is_int(v.get("cell_resolution", 2)) and 0 <= v.get("cell_resolution", 2) <= 15)
    )


def validate_prepare_config(cfg: DictConfig) -> DictConfig:
    """Type and check conf/prepare.yaml; returns the typed config."""
    typed = typed_config(cfg, PrepareConfig)
    for name, value in typed.ingest.split.items():
        if name == "by":
            continue
        typed.ingest.split[name] = (
            _coerce(value, float if isinstance(value, str) and "." in value else int, f"ingest.split.{name}")
            if isinstance(value, str)
            else value
        )
    _check_rules(
        typed,
        {
            "ingest.vocab_size": (positive_int, "a positive integer (the vocabulary size)"),
            "ingest.drop_top": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
            "ingest.min_tags": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "ingest.max_tags": (
                lambda v: _is_int(v) and v >= typed.ingest.min_tags,
                f"an integer >= ingest.min_tags ({typed.ingest.min_tags})",
            ),
            "source.kind": _one_of(("world", "yfcc")),
            "source.n_photos": (positive_int_or_null, "a positive integer or null"),
            "source.feature_dim": (positive_int, "a positive integer"),
        },
    )
    split = OmegaConf.to_container(typed.ingest.split)
    if not _split_ok(split):
        raise ConfigError(
            f"ingest.split={split}: expected 'test' and 'val', each a count >= 1 (integer) or a fraction in (0, 1) "
            "(float); train gets the rest, and no split may be empty; 'by' one of random | user | cell; for "
            "by=cell 'cell_resolution' an H3 resolution 0..15"
        )
    fractions = sum(v for k, v in split.items() if k in ("test", "val") and isinstance(v, float))
    if fractions >= 1:
        raise ConfigError(f"ingest.split={split}: the fractions add up to {fractions:g}, leaving no training photos")
    if typed.source.kind == "yfcc":
        if not typed.source.tsv:
            raise ConfigError(
                "source.tsv: give the YFCC100M metadata file(s), e.g. source.tsv=[/data/yfcc100m_dataset.bz2]"
            )
        if typed.source.features is None:
            raise ConfigError(
                "source.features: path to a locsens.features store is required for real YFCC data "
                "(make one with extract_features.py)"
            )
    return typed


def validate_evaluate_config(cfg: DictConfig) -> DictConfig:
    """Type and check conf/evaluate.yaml: impossible k's, sizes, distances, the store; returns the typed config."""
    from locsens.tracking import WANDB_MODES

    typed = typed_config(cfg, EvaluateConfig)
    ks_ok = (positive_ints, "a non-empty list of positive integers (k >= 1)")
    _check_rules(
        typed,
        {
            "seed": (_is_int, "an integer"),
            "tagging.ks": ks_ok,
            "tagging.place_consistency_k": (positive_int, "a positive integer (k >= 1)"),
            "tagging.place_consistency_town_km": (positive_number, "a positive distance in km"),
            "retrieval.k": (positive_int, "a positive integer (k >= 1)"),
            "retrieval.thresholds_km": (
                lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0 and all(positive_number(x) for x in v),
                "a non-empty list of positive distances in km (.inf allowed)",
            ),
            "retrieval.min_query_images": (positive_int, "a positive integer"),
            "retrieval.max_queries": (positive_int_or_null, "a positive integer or null (all queries)"),
            "retrieval.chunk_queries": (positive_int, "a positive integer"),
            "chunk_images": (positive_int, "a positive integer"),
            "limit_test_images": (positive_int_or_null, "a positive integer or null (the whole test split)"),
            "retrieval.limit_candidates": (positive_int_or_null, "a positive integer or null (the tagging images)"),
            "wandb.mode": _one_of(WANDB_MODES),
            "locsens_dtype": _one_of(_engine_dtypes()),
            **{
                f"{task}.shortlist.{part}": (_is_non_negative_int, "an integer >= 0")
                for task, parts in (("tagging", ("agnostic", "prior")), ("retrieval", ("agnostic", "nearest")))
                for part in parts
            },
        },
    )
    _check_shortlists(typed)
    shard = typed.shard
    if not (positive_int(shard.count) and _is_int(shard.index) and 0 <= shard.index < shard.count):
        raise ConfigError(f"shard.index={shard.index!r}, shard.count={shard.count!r}: expected 0 <= index < count")
    if shard.count > 1 and not shard.dir:
        raise ConfigError(
            f"shard.count={shard.count}: set shard.dir, the directory every shard writes to and where the "
            "merged results land (the same for all shards of one evaluation)"
        )
    check_stores_exist(typed, ("dataset_path",))
    return typed


def _is_non_negative_int(v: Any) -> bool:
    return _is_int(v) and v >= 0


def _check_shortlists(typed: DictConfig) -> None:
    """A cascade's shortlist must be able to fill the ranked lists the metrics read: one of its parts
    alone holds at least max(tagging.ks) tags / retrieval.k (+1 without the query image) images."""
    tagging, retrieval = typed.tagging.shortlist, typed.retrieval.shortlist
    need = max(typed.tagging.ks)
    if tagging is not None and max(tagging.agnostic, tagging.prior) < need:
        raise ConfigError(
            f"tagging.shortlist={{agnostic: {tagging.agnostic}, prior: {tagging.prior}}}: expected agnostic or prior "
            f">= {need} (tagging.ks), or tagging.shortlist=null for exhaustive scoring"
        )
    need = int(typed.retrieval.k) + int(bool(typed.retrieval.exclude_query_image))
    if retrieval is not None and max(retrieval.agnostic, retrieval.nearest) < need:
        raise ConfigError(
            f"retrieval.shortlist={{agnostic: {retrieval.agnostic}, nearest: {retrieval.nearest}}}: expected "
            f"agnostic or nearest >= {need} (retrieval.k), or retrieval.shortlist=null for exhaustive scoring"
        )


def validate_export_config(cfg: DictConfig) -> DictConfig:
    typed = typed_config(cfg, ExportConfig)
    check_stores_exist(typed, ("dataset_path", "features_path"))
    from locsens.artifacts import RunLayout

    if Path(str(typed.checkpoint)).is_dir():  # a run directory, as train's ckpt_path takes: its best checkpoint
        typed.checkpoint = str(RunLayout(Path(str(typed.checkpoint))).best_checkpoint())
    require_file(typed.checkpoint, "checkpoint", "a checkpoint file or a finished run's directory")
    return typed


def validate_extract_config(cfg: DictConfig) -> DictConfig:
    typed = typed_config(cfg, ExtractConfig)
    _check_rules(
        typed,
        {
            "batch_size": (positive_int, "a positive integer"),
            "num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
            "flush_every": (positive_int, "a positive integer"),
            "dtype": _one_of(("float32", "float16")),
        },
    )
    return typed


__all__ = [
    "ConfigError",
    "TRAIN_TOP_LEVEL_KEYS",
    "as_bool",
    "check_stores_exist",
    "check_unknown_keys",
    "typed_config",
    "validate_evaluate_config",
    "validate_export_config",
    "validate_extract_config",
    "validate_prepare_config",
    "validate_train_config",
]


def _engine_dtypes() -> tuple[str, ...]:
    from locsens.scoring import DTYPES  # the scoring engine's own list (torch is imported lazily here)

    return DTYPES


def _require_set(cfg: DictConfig, keys: dict[str, str]) -> None:
    """Each of ``keys`` (key -> what it is) has a value, not the config's ``???``."""
    for key, what in keys.items():
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required ({what}): add {key}=... to the command")


def validate_explore_config(cfg: DictConfig) -> DictConfig:
    typed = typed_config(cfg, ExploreConfig)
    _require_set(typed, {"run": "a LocSens training run directory"})
    _check_rules(
        typed,
        {"dtype": _one_of(_engine_dtypes()), "port": (lambda v: 0 < v < 65536, "a TCP port in 1..65535")},
    )
    for key, value in (("run", typed.run), *((f"eval[{i}]", e) for i, e in enumerate(typed.eval))):
        if not Path(str(value)).is_dir():
            raise FileNotFoundError(f"{key}={value}: no such directory (a training run / an evaluation directory)")
    return typed


def validate_tag_config(cfg: DictConfig) -> DictConfig:
    typed = typed_config(cfg, TagConfig)
    _require_set(
        typed,
        {
            "image": "a photo file",
            "lat": "the latitude where it was taken, degrees",
            "lon": "the longitude where it was taken, degrees",
            "run": "a LocSens training run directory",
        },
    )
    _check_rules(typed, {"dtype": _one_of(_engine_dtypes()), "k": (positive_int, "a positive number of tags")})
    places = [[typed.lat, typed.lon]] + list(OmegaConf.to_container(typed.compare, resolve=True))
    for i, place in enumerate(places):
        key = "lat/lon" if i == 0 else f"compare[{i - 1}]"
        if not (isinstance(place, (list, tuple)) and len(place) == 2 and all(_is_number(v) for v in place)):
            raise ConfigError(f"{key}={place!r}: expected a place [lat, lon] in degrees")
        lat, lon = (float(v) for v in place)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ConfigError(f"{key}={place!r}: latitude must be in [-90, 90] and longitude in [-180, 180]")
    require_file(typed.image, "image", "a photo (JPEG, PNG, ...)")
    if not Path(str(typed.run)).is_dir():
        raise FileNotFoundError(f"run={typed.run}: no such run directory (a LocSens training run)")
    return typed
