"""HDF5 stores: the one home for the on-disk schema, atomic writing and validated reading.

Schema (version ``SCHEMA_VERSION``). Every store carries the root attributes ``schema``
(one of the kinds below) and ``schema_version``. Strings are UTF-8 variable-length.

``locsens.dataset`` -- one row per kept photo (``N`` rows, ``V`` vocabulary tags)::

    photo_id        int64   [N]      YFCC100M photo id, unique
    user_index      int32   [N]      row in users
    users           str     [U]      user NSIDs
    lat, lon        float64 [N]      degrees, lat in [-90, 90], lon in [-180, 180]
    tags_indptr     int64   [N+1]    CSR: tags of row i are tags_indices[indptr[i]:indptr[i+1]]
    tags_indices    int32   [nnz]    vocabulary ids, in the photo's tag order (duplicates kept as the paper)
    town, region, country, continent   int32 [N]   ids into places/<level>
    places/<level>  str     [*]      place names as written (e.g. "New York City")
    place_names     str     [P]      all place names normalised like tags (the "places omitted" list)
    split           int8    [N]      0 = train, 1 = val, 2 = test (attr split_names)
    vocab           str     [V]      vocabulary, frequency-ordered (class index = rank)
    vocab_count     int64   [V]      occurrences of each vocabulary tag in the ingested data
    attrs: source (str), ingest_config (JSON str), n_dropped (JSON str of counts by reason)

``locsens.features`` -- image features keyed by photo id::

    photo_id  int64   [N]       need not match the dataset's order; joined by id
    features  float32 [N, D]    (or float16)
    valid     bool    [N]       False where extraction failed (no features for that id)
    attrs: extractor (str), dim (int = D), complete (bool; False while an extraction is running)

``locsens.embeddings`` -- what a trained model exports for LocSens and the evaluation::

    photo_id  int64   [N]       same order as the dataset store it was made from
    image     float32 [N, d]    image embeddings
    tag       float32 [V, d]    tag embeddings, one row per vocabulary id
    vocab     str     [V]
    attrs: model (str), checkpoint_sha256 (str), dim (int = d), similarity ("cosine" or "dot"),
           dataset_path (str)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

SCHEMA_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")
SPLIT_IDS = {name: i for i, name in enumerate(SPLIT_NAMES)}
PLACE_LEVELS = ("town", "region", "country", "continent")
STR = h5py.string_dtype("utf-8")


class StoreError(ValueError):
    """A store is missing, of the wrong kind or version, or inconsistent. The message names the file."""


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, kind: str, overwrite: bool = False, **attrs) -> Iterator[h5py.File]:
    """Write a store atomically: to a temporary file beside ``path``, renamed into place on success.

    An exception (or a kill) midway leaves any previous store at ``path`` untouched and no file at
    ``path`` that looks valid. An existing store is refused unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=true to rebuild it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = kind
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = v
            yield f
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_strings(group: h5py.Group, name: str, values: Sequence[str]) -> None:
    group.create_dataset(name, data=np.array(list(values), dtype=object), dtype=STR)


def write_dataset_store(
    path,
    *,
    photo_id,
    user_index,
    users,
    lat,
    lon,
    tags_indptr,
    tags_indices,
    places: dict,
    place_index: dict,
    place_names,
    split,
    vocab,
    vocab_count,
    source: str = "",
    ingest_config: dict | None = None,
    n_dropped: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``locsens.dataset`` store (see the module docstring); returns its path."""
    with atomic_h5(
        path,
        "locsens.dataset",
        overwrite=overwrite,
        source=source,
        ingest_config=json.dumps(ingest_config or {}),
        n_dropped=json.dumps(n_dropped or {}),
        split_names=json.dumps(list(SPLIT_NAMES)),
    ) as f:
        f.create_dataset("photo_id", data=np.asarray(photo_id, dtype=np.int64))
        f.create_dataset("user_index", data=np.asarray(user_index, dtype=np.int32))
        write_strings(f, "users", users)
        f.create_dataset("lat", data=np.asarray(lat, dtype=np.float64))
        f.create_dataset("lon", data=np.asarray(lon, dtype=np.float64))
        f.create_dataset("tags_indptr", data=np.asarray(tags_indptr, dtype=np.int64))
        f.create_dataset("tags_indices", data=np.asarray(tags_indices, dtype=np.int32))
        g = f.create_group("places")
        for level in PLACE_LEVELS:
            write_strings(g, level, places[level])
            f.create_dataset(level, data=np.asarray(place_index[level], dtype=np.int32))
        write_strings(f, "place_names", place_names)
        f.create_dataset("split", data=np.asarray(split, dtype=np.int8))
        write_strings(f, "vocab", vocab)
        f.create_dataset("vocab_count", data=np.asarray(vocab_count, dtype=np.int64))
    validate_dataset_store(path)
    return Path(path)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def _open_checked(path, kind: str) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store (expected a {kind} HDF5 file)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path}: not a readable HDF5 file ({e})") from e
    got_kind = f.attrs.get("schema")
    if isinstance(got_kind, bytes):
        got_kind = got_kind.decode()
    if got_kind != kind:
        f.close()
        raise StoreError(f"{path}: attribute 'schema' is {got_kind!r}, expected {kind!r}")
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        f.close()
        raise StoreError(f"{path}: schema_version {version}, this locsens reads version {SCHEMA_VERSION}")
    return f


def _require(f: h5py.File, path, name: str, dtype_kind: str, shape: tuple) -> None:
    if name not in f:
        raise StoreError(f"{path}: missing dataset '{name}'")
    ds = f[name]
    if dtype_kind == "str":
        ok = h5py.check_string_dtype(ds.dtype) is not None
    else:
        ok = ds.dtype.kind in dtype_kind
    if not ok:
        raise StoreError(f"{path}: dataset '{name}' has dtype {ds.dtype}, expected {dtype_kind}")
    for axis, want in enumerate(shape):
        if want is not None and (len(ds.shape) <= axis or ds.shape[axis] != want):
            raise StoreError(f"{path}: dataset '{name}' has shape {ds.shape}, expected {shape} (None = any)")
    if len(ds.shape) != len(shape):
        raise StoreError(f"{path}: dataset '{name}' has {len(ds.shape)} dimensions, expected {len(shape)}")


def validate_dataset_store(path) -> None:
    with _open_checked(path, "locsens.dataset") as f:
        n = f["photo_id"].shape[0] if "photo_id" in f else None
        _require(f, path, "photo_id", "i", (None,))
        v = f["vocab"].shape[0] if "vocab" in f else None
        _require(f, path, "vocab", "str", (None,))
        _require(f, path, "vocab_count", "i", (v,))
        for name in ("user_index", "split", *PLACE_LEVELS):
            _require(f, path, name, "i", (n,))
        _require(f, path, "users", "str", (None,))
        _require(f, path, "lat", "f", (n,))
        _require(f, path, "lon", "f", (n,))
        _require(f, path, "tags_indptr", "i", (n + 1,))
        _require(f, path, "tags_indices", "i", (None,))
        _require(f, path, "place_names", "str", (None,))
        for level in PLACE_LEVELS:
            _require(f, path, f"places/{level}", "str", (None,))
        indptr = f["tags_indptr"][:]
        nnz = f["tags_indices"].shape[0]
        if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
            raise StoreError(f"{path}: tags_indptr is not a valid CSR pointer for {nnz} tag entries")
        if nnz and (f["tags_indices"][:].max() >= v or f["tags_indices"][:].min() < 0):
            raise StoreError(f"{path}: tags_indices has ids outside the vocabulary of {v} tags")
        lat = f["lat"][:]
        if np.any(np.abs(lat) > 90) or np.any(np.abs(f["lon"][:]) > 180):
            raise StoreError(f"{path}: lat/lon outside [-90, 90] x [-180, 180]")
        split = f["split"][:]
        if np.any((split < 0) | (split >= len(SPLIT_NAMES))):
            raise StoreError(f"{path}: split values outside 0..{len(SPLIT_NAMES) - 1}")


def _strings(ds) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[:]]


class DatasetStore:
    """Validated, in-memory view of a ``locsens.dataset`` store (metadata is small: ~20 bytes/photo + tags).

    Safe to pickle into DataLoader workers: it holds numpy arrays, not an open HDF5 handle.
    """

    def __init__(self, path):
        self.path = Path(path)
        validate_dataset_store(self.path)
        with h5py.File(self.path, "r") as f:
            self.photo_id = f["photo_id"][:]
            self.user_index = f["user_index"][:]
            self.users = _strings(f["users"])
            self.lat = f["lat"][:]
            self.lon = f["lon"][:]
            self.tags_indptr = f["tags_indptr"][:]
            self.tags_indices = f["tags_indices"][:]
            self.place_index = {lvl: f[lvl][:] for lvl in PLACE_LEVELS}
            self.places = {lvl: _strings(f[f"places/{lvl}"]) for lvl in PLACE_LEVELS}
            self.place_names = _strings(f["place_names"])
            self.split = f["split"][:]
            self.vocab = _strings(f["vocab"])
            self.vocab_count = f["vocab_count"][:]
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

    def __len__(self) -> int:
        return len(self.photo_id)

    @property
    def num_tags(self) -> int:
        return len(self.vocab)

    def tags_of(self, row: int) -> np.ndarray:
        return self.tags_indices[self.tags_indptr[row] : self.tags_indptr[row + 1]]

    def split_rows(self, split: str) -> np.ndarray:
        """Row indices of a split ('train', 'val' or 'test'), ascending (contiguous reads stay fast)."""
        if split not in SPLIT_IDS:
            raise KeyError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
        return np.flatnonzero(self.split == SPLIT_IDS[split])

    def multi_hot(self, rows: np.ndarray) -> np.ndarray:
        """Dense bool [len(rows), V] ground-truth matrix (for small row sets: tests, evaluation chunks)."""
        out = np.zeros((len(rows), self.num_tags), dtype=bool)
        for i, r in enumerate(rows):
            out[i, self.tags_of(r)] = True
        return out


def validate_feature_store(path) -> None:
    with _open_checked(path, "locsens.features") as f:
        _require(f, path, "photo_id", "i", (None,))
        n = f["photo_id"].shape[0]
        _require(f, path, "features", "f", (n, None))
        _require(f, path, "valid", "b", (n,))
        dim = int(f.attrs.get("dim", -1))
        if dim != f["features"].shape[1]:
            raise StoreError(f"{path}: attribute dim={dim} but 'features' has {f['features'].shape[1]} columns")
        if not bool(f.attrs.get("complete", False)):
            raise StoreError(f"{path}: extraction not complete (attribute complete=False); resume it before use")


class FeatureStore:
    """A ``locsens.features`` store. The HDF5 handle opens lazily per process (DataLoader-worker safe)."""

    def __init__(self, path):
        self.path = Path(path)
        validate_feature_store(self.path)
        with h5py.File(self.path, "r") as f:
            self.photo_id = f["photo_id"][:]
            self.valid = f["valid"][:]
            self.dim = int(f.attrs["dim"])
            self.extractor = str(f.attrs.get("extractor", ""))
        self._file = None
        self._pid = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    @property
    def features(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file["features"]

    def rows_for(self, photo_id: np.ndarray, source: str = "dataset") -> np.ndarray:
        """Row in this store of each photo id; -1 where the id is absent or has no valid features."""
        order = np.argsort(self.photo_id, kind="stable")
        sorted_ids = self.photo_id[order]
        pos = np.searchsorted(sorted_ids, photo_id)
        pos = np.clip(pos, 0, len(sorted_ids) - 1)
        found = sorted_ids[pos] == photo_id if len(sorted_ids) else np.zeros(len(photo_id), bool)
        rows = np.where(found, order[pos], -1)
        rows[rows >= 0] = np.where(self.valid[rows[rows >= 0]], rows[rows >= 0], -1)
        return rows

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Features of the given rows, in the given order, as float32 (one sorted HDF5 read)."""
        rows = np.asarray(rows)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        uniq, inverse = np.unique(rows, return_inverse=True)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        if hi - lo <= 4 * len(uniq):  # dense enough: one contiguous slab is faster than fancy indexing
            block = self.features[lo:hi]
            out = block[uniq - lo]
        else:
            out = self.features[uniq]
        return np.asarray(out[inverse], dtype=np.float32)

    def read_all(self) -> np.ndarray:
        return np.asarray(self.features[:], dtype=np.float32)


def validate_embedding_store(path, dataset: DatasetStore | None = None) -> None:
    with _open_checked(path, "locsens.embeddings") as f:
        _require(f, path, "photo_id", "i", (None,))
        n = f["photo_id"].shape[0]
        _require(f, path, "image", "f", (n, None))
        d = f["image"].shape[1]
        _require(f, path, "vocab", "str", (None,))
        v = f["vocab"].shape[0]
        _require(f, path, "tag", "f", (v, d))
        sim = f.attrs.get("similarity")
        if sim not in ("cosine", "dot"):
            raise StoreError(f"{path}: attribute similarity={sim!r}, expected 'cosine' or 'dot'")
        if dataset is not None:
            if n != len(dataset) or not np.array_equal(f["photo_id"][:], dataset.photo_id):
                raise StoreError(f"{path}: photo ids do not match the dataset store {dataset.path} ({n} vs {len(dataset)} rows)")
            if v != dataset.num_tags or _strings(f["vocab"]) != dataset.vocab:
                raise StoreError(f"{path}: vocabulary ({v} tags) does not match the dataset store {dataset.path} ({dataset.num_tags} tags)")


def write_embedding_store(path, *, photo_id, image, tag, vocab, model: str, checkpoint_sha256: str, similarity: str, dataset_path: str = "", overwrite: bool = False) -> Path:
    image = np.asarray(image, dtype=np.float32)
    with atomic_h5(path, "locsens.embeddings", overwrite=overwrite, model=model, checkpoint_sha256=checkpoint_sha256, dim=int(image.shape[1]), similarity=similarity, dataset_path=str(dataset_path)) as f:
        f.create_dataset("photo_id", data=np.asarray(photo_id, dtype=np.int64))
        f.create_dataset("image", data=image)
        f.create_dataset("tag", data=np.asarray(tag, dtype=np.float32))
        write_strings(f, "vocab", vocab)
    validate_embedding_store(path)
    return Path(path)


class EmbeddingStore:
    """A validated ``locsens.embeddings`` store, loaded in memory (N x d float32)."""

    def __init__(self, path, dataset: DatasetStore | None = None):
        self.path = Path(path)
        validate_embedding_store(self.path, dataset)
        with h5py.File(self.path, "r") as f:
            self.photo_id = f["photo_id"][:]
            self.image = f["image"][:]
            self.tag = f["tag"][:]
            self.vocab = _strings(f["vocab"])
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

    @property
    def dim(self) -> int:
        return self.image.shape[1]

    @property
    def similarity(self) -> str:
        return self.attrs["similarity"]


def write_feature_store(path, *, photo_id, features, extractor: str, valid=None, overwrite: bool = False, chunk_rows: int = 4096) -> Path:
    """Write a complete ``locsens.features`` store in one go (``features`` may be an array or an
    iterable of row blocks in photo_id order). Resumable extraction writes its own partial file
    and calls :func:`finalise_feature_store`."""
    photo_id = np.asarray(photo_id, dtype=np.int64)
    n = len(photo_id)
    with atomic_h5(path, "locsens.features", overwrite=overwrite, extractor=extractor, complete=True) as f:
        f.create_dataset("photo_id", data=photo_id)
        if isinstance(features, np.ndarray):
            dim = features.shape[1]
            f.create_dataset("features", data=features, chunks=(min(chunk_rows, max(n, 1)), dim))
        else:
            ds = None
            row = 0
            for block in features:
                block = np.asarray(block)
                if ds is None:
                    dim = block.shape[1]
                    ds = f.create_dataset("features", shape=(n, dim), dtype=block.dtype, chunks=(min(chunk_rows, max(n, 1)), dim))
                ds[row : row + len(block)] = block
                row += len(block)
            if row != n:
                raise ValueError(f"{path}: feature blocks gave {row} rows for {n} photo ids")
        f.attrs["dim"] = int(dim)
        f.create_dataset("valid", data=np.ones(n, bool) if valid is None else np.asarray(valid, bool))
    validate_feature_store(path)
    return Path(path)


# --------------------------------------------------------------------------------------------
# resumable feature extraction: the partial store
# --------------------------------------------------------------------------------------------
def partial_feature_store_path(path) -> Path:
    """Where an unfinished extraction into ``path`` keeps its rows: ``.<name>.partial.h5`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial.h5")


def create_partial_feature_store(path, *, photo_id, dim: int, extractor: str, inputs_sha256: str, dtype: str = "float32") -> Path:
    """Create the partial file of a feature store that extraction fills in over one or more runs.

    Layout: the ``locsens.features`` datasets (``features`` zero-filled, ``valid`` all False) plus
    ``done`` bool [N] (rows whose result is on disk) and the attrs ``complete=False``, ``extractor``
    and ``inputs_sha256`` (a resumed run must have the same inputs and backbone). ``features`` is
    contiguous and allocated at creation, so later writes touch raw data only, never HDF5 metadata.
    The file appears under its final partial name only once fully created.
    """
    photo_id = np.asarray(photo_id, dtype=np.int64)
    partial = partial_feature_store_path(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial.with_name(f"{partial.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(schema="locsens.features", schema_version=SCHEMA_VERSION, extractor=extractor,
                           dim=int(dim), complete=False, inputs_sha256=inputs_sha256)
            f.create_dataset("photo_id", data=photo_id)
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            space = h5py.h5s.create_simple((len(photo_id), int(dim)))
            h5py.h5d.create(f.id, b"features", h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
            f.create_dataset("valid", data=np.zeros(len(photo_id), bool))
            f.create_dataset("done", data=np.zeros(len(photo_id), bool))
        os.replace(tmp, partial)
    finally:
        if tmp.exists():
            tmp.unlink()
    return partial


def open_partial_feature_store(path, *, extractor: str, inputs_sha256: str) -> h5py.File:
    """Open (read-write) the partial file of ``path`` after checking it belongs to this extraction."""
    partial = partial_feature_store_path(path)
    try:
        f = h5py.File(partial, "r+")
    except OSError as e:
        raise StoreError(f"{partial}: unreadable partial store ({e}); delete it (or pass restart=true) to start over") from e
    for key, want in (("extractor", extractor), ("inputs_sha256", inputs_sha256)):
        got = f.attrs.get(key)
        got = got.decode() if isinstance(got, bytes) else got
        if got != want:
            f.close()
            raise StoreError(f"{partial}: attribute {key}={got!r} but this run has {want!r} (different backbone "
                             "or input list); delete it (or pass restart=true) to start over")
    for name in ("photo_id", "features", "valid", "done"):
        if name not in f:
            f.close()
            raise StoreError(f"{partial}: missing dataset '{name}'")
    return f


def finalise_feature_store(path, overwrite: bool = False) -> Path:
    """Turn a partial store whose every row is done into the store at ``path`` (complete=True, atomic rename)."""
    path = Path(path)
    partial = partial_feature_store_path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=true to rebuild it")
    with h5py.File(partial, "r+") as f:
        n_left = int((~f["done"][:]).sum())
        if n_left:
            raise StoreError(f"{partial}: {n_left} rows not extracted yet; cannot finalise")
        del f["done"]
        del f.attrs["inputs_sha256"]
        f.attrs["complete"] = True
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, path)
    validate_feature_store(path)
    return path
