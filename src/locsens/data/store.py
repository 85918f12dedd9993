"""HDF5 stores: the one home for the on-disk schema, atomic writing and validated reading.

Schema (version ``SCHEMA_VERSION``). Every store carries the root attributes ``schema``
(one of the kinds below), ``schema_version``, ``content_id`` (sha256 of the store's datasets, in a fixed
order, computed while writing: two stores with the same content have the same id) and ``made_from``
(JSON: the ids and paths of the artefacts it was built from; see :mod:`locsens.artifacts`, which
checks them). Strings are UTF-8 variable-length. Photo ids are unique and features finite in every
store: both are checked when a store is written and when it is validated.

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
    attrs: source (str), ingest_config (JSON str), n_dropped (JSON str of counts by reason),
           made_from = {"inputs": [{path, size, sha256}], "ingest_config": {...}, "features": {id, path}}

``locsens.features`` -- image features keyed by photo id::

    photo_id  int64   [N]       need not match the dataset's order; joined by id
    features  float32 [N, D]    (or float16)
    valid     bool    [N]       False where extraction failed (no features for that id)
    attrs: extractor (str), dim (int = D), complete (bool; False while an extraction is running),
           made_from = {"extractor": str, "images": inputs sha256} (or the simulated world's parameters)

``locsens.embeddings`` -- what a trained model exports for LocSens and the evaluation::

    photo_id  int64   [N]       same order as the dataset store it was made from
    image     float32 [N, d]    image embeddings
    tag       float32 [V, d]    tag embeddings, one row per vocabulary id
    vocab     str     [V]
    attrs: model (str), checkpoint_sha256 (str), dim (int = d), similarity ("cosine" or "dot"),
           dataset_path (str), made_from = {"checkpoint": {sha256, path}, "dataset": {id, path},
           "features": {id, path}}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from locsens.files import ArtefactWriteError, atomic_path, check_free_space, describe_os_error, is_disk_error, os_errno

SCHEMA_VERSION = 2
SPLIT_NAMES = ("train", "val", "test")
SPLIT_IDS = {name: i for i, name in enumerate(SPLIT_NAMES)}
PLACE_LEVELS = ("town", "region", "country", "continent")
STR = h5py.string_dtype("utf-8")
REBUILD_HINT = {
    "locsens.dataset": "rebuild it with `python prepare.py world=<world> overwrite=true`",
    "locsens.features": "re-extract it with `python extract_features.py ...` (or rebuild a simulated world with prepare.py overwrite=true)",
    "locsens.embeddings": "re-export it with `python export.py checkpoint=<run dir>/checkpoints/<best>.ckpt`",
}


class StoreError(ValueError):
    """A store is missing, of the wrong kind or version, or inconsistent. The message names the file."""


# --------------------------------------------------------------------------------------------
# content ids
# --------------------------------------------------------------------------------------------
class ContentHasher:
    """sha256 over named arrays in the order they are added (name, dtype, shape and bytes of each).

    Strings are hashed as their UTF-8 bytes joined by NUL; numeric blocks of one dataset may be added
    piecewise (``add_block``) as long as the same data always arrives in the same row order.
    """

    def __init__(self):
        self._h = hashlib.sha256()

    def add(self, name: str, values) -> None:
        if isinstance(values, (list, tuple)) and (not values or isinstance(values[0], str)):
            self._h.update(f"{name}:str[{len(values)}]".encode())
            self._h.update("\0".join(values).encode("utf-8"))
            return
        arr = np.ascontiguousarray(values)
        self._h.update(f"{name}:{arr.dtype.str}{arr.shape}".encode())
        self._h.update(arr.tobytes())

    def add_block(self, values: np.ndarray) -> None:
        self._h.update(np.ascontiguousarray(values).tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


# the datasets each kind of store hashes into its content id, in order (writers and recompute_content_id)
DATASET_COLUMNS = (
    "photo_id", "user_index", "users", "lat", "lon", "tags_indptr", "tags_indices",
    *(f"places/{lvl}" for lvl in PLACE_LEVELS), *PLACE_LEVELS, "place_names", "split", "vocab", "vocab_count",
)  # fmt: skip
VERIFY_MAX_BYTES = 8 << 30  # stores up to this size are re-hashed when a consumer verifies them


def recompute_content_id(path, block_rows: int = 65536) -> str:
    """The content id of the store at ``path`` computed from its datasets, as its writer did: an edit in
    place (which leaves the ``content_id`` attribute as it was) gives another id."""
    with h5py.File(path, "r") as f:
        kind, hasher = _attr(f.attrs.get("schema")), ContentHasher()

        def add(name):
            ds = f[name]
            if h5py.check_string_dtype(ds.dtype) is not None:
                hasher.add(name, ds.asstr()[()].tolist())
            else:
                hasher.add(name, ds[()])

        if kind == "locsens.dataset":
            for name in DATASET_COLUMNS:
                add(name)
        elif kind == "locsens.features":
            add("photo_id")
            add("valid")
            feats = f["features"]
            hasher.add("features", np.zeros((0, feats.shape[1]), feats.dtype))
            for start in range(0, feats.shape[0], block_rows):
                hasher.add_block(feats[start : start + block_rows])
        elif kind == "locsens.embeddings":
            for name in ("photo_id", "image", "tag", "vocab"):
                add(name)
            hasher.add("similarity", [str(_attr(f.attrs.get("similarity")))])
        else:
            raise StoreError(f"{path}: attribute 'schema' is {kind!r}, not a locsens store")
        return hasher.hexdigest()


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> content id known to match this file version


def _version_key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def remember_written(path) -> None:
    """A writer computed this store's content id from the data it wrote: no need to re-hash it here."""
    path = Path(path)
    _VERIFIED[_version_key(path)] = read_identity(path)[0]


def verify_content_id(path, max_bytes: int = VERIFY_MAX_BYTES) -> str:
    """The store's content id, re-hashed from its data (stores above ``max_bytes`` are trusted by their
    attribute; each file version is hashed once per process). Refuses a store whose data no longer
    gives the id it records (edited in place after it was written)."""
    path = Path(path)
    st = path.stat()
    key = _version_key(path)
    recorded = read_identity(path)[0]
    if st.st_size > max_bytes or _VERIFIED.get(key) == recorded:
        return recorded
    actual = recompute_content_id(path)
    if actual != recorded:
        raise StoreError(
            f"{path}: its data gives content id {actual[:12]}, but the store records {recorded[:12]}: it was "
            "modified after it was written (stores are never edited in place); rebuild it with the command "
            "that made it"
        )
    _VERIFIED[key] = actual
    return actual


def _attr(value):
    return value.decode() if isinstance(value, bytes) else value


def read_identity(path) -> tuple[str, dict]:
    """(content_id, made_from) of a store, read from its attributes only (cheap)."""
    with h5py.File(path, "r") as f:
        return str(_attr(f.attrs.get("content_id", ""))), json.loads(_attr(f.attrs.get("made_from", "{}")) or "{}")


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_h5(
    path: str | os.PathLike,
    kind: str,
    overwrite: bool = False,
    expected_bytes: int = 0,
    in_memory: bool = True,
    **attrs,
) -> Iterator[h5py.File]:
    """Write a store atomically: to a temporary file beside ``path``, renamed into place on success.

    An exception (or a kill) midway leaves any previous store at ``path`` untouched and no file at
    ``path`` that looks valid. An existing store is refused unless ``overwrite``.

    A full disk: HDF5 can crash the process (a segfault when closing a file whose flush failed), so
    stores built from arrays in memory (``in_memory``, the default) are assembled as an HDF5 image in
    memory and written by Python, where ENOSPC is an ordinary error; streamed stores (features) are
    written to disk directly, after ``expected_bytes`` were checked against the free space.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=true to rebuild it")
    with atomic_path(path, overwrite=overwrite) as tmp:
        if expected_bytes:
            check_free_space(path, int(expected_bytes * 1.02) + (1 << 20))
        f = h5py.File(tmp, "w", driver="core", backing_store=False) if in_memory else h5py.File(tmp, "w")
        try:
            f.attrs["schema"] = kind
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = v
            yield f
            if in_memory:
                f.flush()
                image = f.id.get_file_image()
                f.close()
                with open(tmp, "wb") as fh:
                    fh.write(image)
            else:
                f.close()
        except (OSError, RuntimeError) as e:
            with contextlib.suppress(Exception):
                f.close()
            if is_disk_error(e):
                raise ArtefactWriteError(
                    os_errno(e),
                    f"{path}: could not be written ({describe_os_error(e)}); any previous {path.name} is intact",
                ) from e
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            raise


def write_strings(group: h5py.Group, name: str, values: Sequence[str]) -> None:
    group.create_dataset(name, data=np.array(list(values), dtype=object), dtype=STR)


def _nbytes(*arrays) -> int:
    return sum(
        np.asarray(a).nbytes if not isinstance(a, (list, tuple)) else sum(len(s) + 16 for s in a) for a in arrays
    )


def first_duplicates(ids: np.ndarray, n: int = 5) -> list[int]:
    """Up to ``n`` ids that occur more than once (sorted), or [] when all are unique."""
    ids = np.asarray(ids)
    if len(ids) < 2:
        return []
    s = np.sort(ids, kind="stable")
    return np.unique(s[1:][s[1:] == s[:-1]])[:n].tolist()


def check_finite(path, what: str, values: np.ndarray, photo_id: np.ndarray | None = None, row0: int = 0) -> None:
    """Refuse NaN / inf values, naming the first rows (and their photo ids)."""
    values = np.asarray(values)
    if values.dtype.kind != "f" or values.size == 0:
        return
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if finite.all():
        return
    bad = np.flatnonzero(~finite)
    ids = "" if photo_id is None else f" (photo ids {np.asarray(photo_id)[bad[:5]].tolist()})"
    raise StoreError(
        f"{path}: {what} holds NaN or inf in {len(bad)} rows, first rows {(bad[:5] + row0).tolist()}{ids}; "
        "every feature must be a finite number"
    )


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
    made_from: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``locsens.dataset`` store (see the module docstring); returns its path."""
    photo_id = np.asarray(photo_id, dtype=np.int64)
    dup = first_duplicates(photo_id)
    if dup:
        raise StoreError(f"{path}: photo ids must be unique; duplicated: {dup}")
    columns = {
        "photo_id": photo_id,
        "user_index": np.asarray(user_index, dtype=np.int32),
        "users": list(users),
        "lat": np.asarray(lat, dtype=np.float64),
        "lon": np.asarray(lon, dtype=np.float64),
        "tags_indptr": np.asarray(tags_indptr, dtype=np.int64),
        "tags_indices": np.asarray(tags_indices, dtype=np.int32),
        **{f"places/{lvl}": list(places[lvl]) for lvl in PLACE_LEVELS},
        **{lvl: np.asarray(place_index[lvl], dtype=np.int32) for lvl in PLACE_LEVELS},
        "place_names": list(place_names),
        "split": np.asarray(split, dtype=np.int8),
        "vocab": list(vocab),
        "vocab_count": np.asarray(vocab_count, dtype=np.int64),
    }
    assert tuple(columns) == DATASET_COLUMNS  # the order recompute_content_id hashes them in
    hasher = ContentHasher()
    for name, values in columns.items():
        hasher.add(name, values)
    with atomic_h5(
        path,
        "locsens.dataset",
        overwrite=overwrite,
        expected_bytes=_nbytes(*columns.values()),
        source=source,
        ingest_config=json.dumps(ingest_config or {}),
        n_dropped=json.dumps(n_dropped or {}),
        split_names=json.dumps(list(SPLIT_NAMES)),
        content_id=hasher.hexdigest(),
        made_from=json.dumps(made_from or {}),
    ) as f:
        for name, values in columns.items():
            if isinstance(values, list):
                write_strings(f, name, values)
            else:
                f.create_dataset(name, data=values)
    validate_dataset_store(path)
    remember_written(path)
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
        raise StoreError(f"{path}: not a readable HDF5 file ({e}); {REBUILD_HINT.get(kind, 'rebuild it')}") from e
    got_kind = _attr(f.attrs.get("schema"))
    if got_kind != kind:
        f.close()
        raise StoreError(f"{path}: attribute 'schema' is {got_kind!r}, expected {kind!r}")
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        f.close()
        raise StoreError(
            f"{path}: schema_version {version}, this locsens reads version {SCHEMA_VERSION}; "
            f"{REBUILD_HINT.get(kind, 'rebuild it')}"
        )
    if not _attr(f.attrs.get("content_id", "")) and f.attrs.get(
        "complete", True
    ):  # a partial store gets it when finalised
        f.close()
        raise StoreError(
            f"{path}: no content_id attribute (not written by locsens' store writers); {REBUILD_HINT.get(kind, 'rebuild it')}"
        )
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


def _check_unique_ids(path, ids: np.ndarray) -> None:
    dup = first_duplicates(ids)
    if dup:
        raise StoreError(
            f"{path}: photo ids must be unique; duplicated: {dup}; {REBUILD_HINT['locsens.dataset'].split(' with')[0]}"
        )


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
        if n == 0:
            raise StoreError(f"{path}: holds no photos")
        if v == 0:
            raise StoreError(f"{path}: has an empty vocabulary")
        _check_unique_ids(path, f["photo_id"][:])
        indptr = f["tags_indptr"][:]
        nnz = f["tags_indices"].shape[0]
        if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
            raise StoreError(f"{path}: tags_indptr is not a valid CSR pointer for {nnz} tag entries")
        if nnz and (f["tags_indices"][:].max() >= v or f["tags_indices"][:].min() < 0):
            raise StoreError(f"{path}: tags_indices has ids outside the vocabulary of {v} tags")
        lat, lon = f["lat"][:], f["lon"][:]
        if not (np.all(np.abs(lat) <= 90) and np.all(np.abs(lon) <= 180)):  # NaN fails too
            raise StoreError(f"{path}: lat/lon outside [-90, 90] x [-180, 180] (or not finite)")
        split = f["split"][:]
        if np.any((split < 0) | (split >= len(SPLIT_NAMES))):
            raise StoreError(f"{path}: split values outside 0..{len(SPLIT_NAMES) - 1}")


def _strings(ds) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[:]]


def _attrs(f: h5py.File) -> dict:
    return {k: _attr(v) for k, v in f.attrs.items()}


class _Identity:
    """What every store says of itself: its content id and what it was made from (``attrs`` of the file)."""

    attrs: dict

    @property
    def content_id(self) -> str:
        return self.attrs["content_id"]

    @property
    def made_from(self) -> dict:
        return json.loads(self.attrs.get("made_from") or "{}")


class DatasetStore(_Identity):
    """Validated, in-memory view of a ``locsens.dataset`` store (metadata is small: ~20 bytes/photo + tags).

    Safe to pickle into DataLoader workers: it holds numpy arrays, not an open HDF5 handle.
    """

    def __init__(self, path):
        self.path = Path(path)
        validate_dataset_store(self.path)
        verify_content_id(self.path)  # an in-place edit keeps the recorded id: refuse it
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
            self.attrs = _attrs(f)

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

    def tag_counts(self, split: str | None = None) -> np.ndarray:
        """Photos carrying each tag ``[V]`` (int64), in one split or (None) in all."""
        entries = self.tags_indices
        if split is not None:
            entries = entries[np.repeat(self.split == SPLIT_IDS[split], np.diff(self.tags_indptr))]
        return np.bincount(entries, minlength=self.num_tags)

    def rows_with_any(self, tag_mask: np.ndarray) -> np.ndarray:
        """Bool per row: does the image carry a tag of the bool mask ``tag_mask`` [V]?"""
        hit = np.zeros(len(self), dtype=bool)
        np.logical_or.at(hit, np.repeat(np.arange(len(self)), np.diff(self.tags_indptr)), tag_mask[self.tags_indices])
        return hit

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
        if n == 0:
            raise StoreError(f"{path}: holds no features")
        _check_unique_ids(path, f["photo_id"][:])


def require_paired(dataset: DatasetStore, features: FeatureStore) -> None:
    """A dataset store records the feature store it was prepared with; refuse any other (a world whose
    rebuild was interrupted between its two files, or stores from two worlds)."""
    paired = (dataset.made_from.get("features") or {}).get("id")
    if paired and paired != features.content_id:
        raise StoreError(
            f"{dataset.path} was prepared with feature store {paired[:12]}, but {features.path} is "
            f"{features.content_id[:12]}: they are not one world (a rebuild interrupted between the two files?); "
            f"rebuild it: python prepare.py world={dataset.path.parent.name} overwrite=true"
        )


class FeatureStore(_Identity):
    """A ``locsens.features`` store. The HDF5 handle opens lazily per process (DataLoader-worker safe).

    Every read is checked for NaN / inf (naming the photo ids): a non-finite feature would otherwise
    surface epochs later as NaN scores.
    """

    def __init__(self, path):
        self.path = Path(path)
        validate_feature_store(self.path)
        verify_content_id(self.path)  # an in-place edit keeps the recorded id: refuse it
        with h5py.File(self.path, "r") as f:
            self.photo_id = f["photo_id"][:]
            self.valid = f["valid"][:]
            self.dim = int(f.attrs["dim"])
            self.extractor = str(_attr(f.attrs.get("extractor", "")))
            self.attrs = _attrs(f)
        self._file = None
        self._pid = None
        self._map = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_map"] = None
        return state

    @property
    def features(self) -> h5py.Dataset:
        self._open()
        return self._file["features"]

    def close(self) -> None:
        """Close this process's handle and memory map (a later read opens them again)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid, self._map = None, None, None

    def _open(self) -> None:
        """Open the file in this process (again after a fork) and map a contiguous ``features`` into memory."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            ds = self._file["features"]
            offset = ds.id.get_offset()
            # a contiguous, uncompressed dataset is one block of the file: numpy reads it through the page
            # cache (random rows at memory speed); chunked stores (older writers) go through HDF5
            contiguous = ds.chunks is None and ds.compression is None and offset is not None and ds.size
            self._map = (
                np.memmap(self.path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape) if contiguous else None
            )

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
        uniq, inverse = np.unique(rows, return_inverse=True)  # ascending: the file is read front to back
        self._open()
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        if self._map is not None:
            out = self._map[uniq]
        elif hi - lo <= 4 * len(uniq):  # dense enough: one contiguous slab is faster than fancy indexing
            block = self.features[lo:hi]
            out = block[uniq - lo]
        else:
            out = self.features[uniq]
        check_finite(self.path, "'features'", out, self.photo_id[uniq])
        return np.asarray(out[inverse], dtype=np.float32)

    def read_all(self) -> np.ndarray:
        out = np.asarray(self.features[:], dtype=np.float32)
        check_finite(self.path, "'features'", out, self.photo_id)
        return out


def validate_embedding_store(path, dataset: DatasetStore | None = None) -> None:
    with _open_checked(path, "locsens.embeddings") as f:
        _require(f, path, "photo_id", "i", (None,))
        n = f["photo_id"].shape[0]
        _require(f, path, "image", "f", (n, None))
        d = f["image"].shape[1]
        _require(f, path, "vocab", "str", (None,))
        v = f["vocab"].shape[0]
        _require(f, path, "tag", "f", (v, d))
        sim = _attr(f.attrs.get("similarity"))
        if sim not in ("cosine", "dot"):
            raise StoreError(f"{path}: attribute similarity={sim!r}, expected 'cosine' or 'dot'")
        if dataset is not None:
            if n != len(dataset) or not np.array_equal(f["photo_id"][:], dataset.photo_id):
                raise StoreError(
                    f"{path}: photo ids do not match the dataset store {dataset.path} ({n} vs {len(dataset)} rows)"
                )
            if v != dataset.num_tags or _strings(f["vocab"]) != dataset.vocab:
                raise StoreError(
                    f"{path}: vocabulary ({v} tags) does not match the dataset store {dataset.path} ({dataset.num_tags} tags)"
                )


def write_embedding_store(
    path,
    *,
    photo_id,
    image,
    tag,
    vocab,
    model: str,
    checkpoint_sha256: str,
    similarity: str,
    dataset_path: str = "",
    made_from: dict | None = None,
    overwrite: bool = False,
) -> Path:
    image = np.asarray(image, dtype=np.float32)
    tag = np.asarray(tag, dtype=np.float32)
    photo_id = np.asarray(photo_id, dtype=np.int64)
    check_finite(path, "image embeddings", image, photo_id)
    check_finite(path, "tag embeddings", tag)
    hasher = ContentHasher()
    for name, values in (
        ("photo_id", photo_id),
        ("image", image),
        ("tag", tag),
        ("vocab", list(vocab)),
        ("similarity", [similarity]),
    ):
        hasher.add(name, values)
    with atomic_h5(
        path,
        "locsens.embeddings",
        overwrite=overwrite,
        expected_bytes=_nbytes(photo_id, image, tag, list(vocab)),
        model=model,
        checkpoint_sha256=checkpoint_sha256,
        dim=int(image.shape[1]),
        similarity=similarity,
        dataset_path=str(dataset_path),
        content_id=hasher.hexdigest(),
        made_from=json.dumps(made_from or {}),
    ) as f:
        f.create_dataset("photo_id", data=photo_id)
        f.create_dataset("image", data=image)
        f.create_dataset("tag", data=tag)
        write_strings(f, "vocab", vocab)
    validate_embedding_store(path)
    remember_written(path)
    return Path(path)


class EmbeddingStore(_Identity):
    """A validated ``locsens.embeddings`` store, loaded in memory (N x d float32)."""

    def __init__(self, path, dataset: DatasetStore | None = None):
        self.path = Path(path)
        validate_embedding_store(self.path, dataset)
        verify_content_id(self.path)  # an in-place edit keeps the recorded id: refuse it
        with h5py.File(self.path, "r") as f:
            self.photo_id = f["photo_id"][:]
            self.image = f["image"][:]
            self.tag = f["tag"][:]
            self.vocab = _strings(f["vocab"])
            self.attrs = _attrs(f)
        check_finite(self.path, "image embeddings", self.image, self.photo_id)
        check_finite(self.path, "tag embeddings", self.tag)

    @property
    def dim(self) -> int:
        return self.image.shape[1]

    @property
    def similarity(self) -> str:
        return self.attrs["similarity"]


def write_feature_store(
    path,
    *,
    photo_id,
    features,
    extractor: str,
    valid=None,
    made_from: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete ``locsens.features`` store in one go (``features`` may be an array or an
    iterable of row blocks in photo_id order), ``features`` contiguous in the file. Resumable extraction
    writes its own partial file and calls :func:`finalise_feature_store`."""
    photo_id = np.asarray(photo_id, dtype=np.int64)
    n = len(photo_id)
    if n == 0:
        raise StoreError(f"{path}: no photo ids to write")
    dup = first_duplicates(photo_id)
    if dup:
        raise StoreError(f"{path}: photo ids must be unique; duplicated: {dup}")
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    blocks: Iterable = [features] if isinstance(features, np.ndarray) else features
    hasher = ContentHasher()
    hasher.add("photo_id", photo_id)
    hasher.add("valid", valid)
    expected = n * (np.asarray(features).shape[1] * 4 if isinstance(features, np.ndarray) else 0)
    with atomic_h5(
        path,
        "locsens.features",
        overwrite=overwrite,
        expected_bytes=expected,
        in_memory=False,
        extractor=extractor,
        complete=True,
        made_from=json.dumps(made_from or {"extractor": extractor}),
    ) as f:
        f.create_dataset("photo_id", data=photo_id)
        ds, row = None, 0
        for block in blocks:
            block = np.asarray(block)
            check_finite(path, "'features'", block, photo_id[row : row + len(block)], row0=row)
            if ds is None:
                dim = block.shape[1]
                check_free_space(
                    path, int(n * dim * block.dtype.itemsize * 1.02) + (1 << 20)
                )  # before HDF5 meets a full disk
                # contiguous (no chunks): readers map it into memory (FeatureStore.read), as extraction's stores
                ds = f.create_dataset("features", shape=(n, dim), dtype=block.dtype)
                hasher.add("features", np.zeros((0, dim), block.dtype))  # dtype and width; rows follow
            ds[row : row + len(block)] = block
            hasher.add_block(block)
            row += len(block)
        if row != n:
            raise ValueError(f"{path}: feature blocks gave {row} rows for {n} photo ids")
        f.attrs["dim"] = int(dim)
        f.attrs["content_id"] = hasher.hexdigest()
        f.create_dataset("valid", data=valid)
    validate_feature_store(path)
    remember_written(path)
    return Path(path)


# --------------------------------------------------------------------------------------------
# resumable feature extraction: the partial store
# --------------------------------------------------------------------------------------------
def partial_feature_store_path(path) -> Path:
    """Where an unfinished extraction into ``path`` keeps its rows: ``.<name>.partial.h5`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial.h5")


def create_partial_feature_store(
    path, *, photo_id, dim: int, extractor: str, inputs_sha256: str, dtype: str = "float32"
) -> Path:
    """Create the partial file of a feature store that extraction fills in over one or more runs.

    Layout: the ``locsens.features`` datasets (``features`` zero-filled, ``valid`` all False) plus
    ``done`` bool [N] (rows whose result is on disk) and the attrs ``complete=False``, ``extractor``
    and ``inputs_sha256`` (a resumed run must have the same inputs and backbone). ``features`` is
    contiguous and allocated at creation, so later writes touch raw data only, never HDF5 metadata.
    The file appears under its final partial name only once fully created.
    """
    photo_id = np.asarray(photo_id, dtype=np.int64)
    partial = partial_feature_store_path(path)
    with atomic_path(partial) as tmp:
        check_free_space(partial, len(photo_id) * int(dim) * np.dtype(dtype).itemsize + (1 << 20))
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                schema="locsens.features",
                schema_version=SCHEMA_VERSION,
                extractor=extractor,
                dim=int(dim),
                complete=False,
                inputs_sha256=inputs_sha256,
                made_from=json.dumps({"extractor": extractor, "images": inputs_sha256}),
            )
            f.create_dataset("photo_id", data=photo_id)
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            space = h5py.h5s.create_simple((len(photo_id), int(dim)))
            h5py.h5d.create(f.id, b"features", h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
            f.create_dataset("valid", data=np.zeros(len(photo_id), bool))
            f.create_dataset("done", data=np.zeros(len(photo_id), bool))
    return partial


def open_partial_feature_store(path, *, extractor: str, inputs_sha256: str) -> h5py.File:
    """Open (read-write) the partial file of ``path`` after checking it belongs to this extraction."""
    partial = partial_feature_store_path(path)
    try:
        f = h5py.File(partial, "r+")
    except OSError as e:
        raise StoreError(
            f"{partial}: unreadable partial store ({e}); delete it (or pass restart=true) to start over"
        ) from e
    for key, want in (("extractor", extractor), ("inputs_sha256", inputs_sha256)):
        got = _attr(f.attrs.get(key))
        if got != want:
            f.close()
            raise StoreError(
                f"{partial}: attribute {key}={got!r} but this run has {want!r} (different backbone "
                "or input list); delete it (or pass restart=true) to start over"
            )
    for name in ("photo_id", "features", "valid", "done"):
        if name not in f:
            f.close()
            raise StoreError(f"{partial}: missing dataset '{name}'")
    return f


def finalise_feature_store(path, overwrite: bool = False, block_rows: int = 65536) -> Path:
    """Turn a partial store whose every row is done into the store at ``path`` (complete=True, atomic rename).

    The content id is computed here, in one sequential pass over the features (which also refuses
    non-finite values before the store can be used)."""
    path = Path(path)
    partial = partial_feature_store_path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=true to rebuild it")
    with h5py.File(partial, "r+") as f:
        n_left = int((~f["done"][:]).sum())
        if n_left:
            raise StoreError(f"{partial}: {n_left} rows not extracted yet; cannot finalise")
        photo_id, valid, feats = f["photo_id"][:], f["valid"][:], f["features"]
        hasher = ContentHasher()
        hasher.add("photo_id", photo_id)
        hasher.add("valid", valid)
        hasher.add("features", np.zeros((0, feats.shape[1]), feats.dtype))
        for start in range(0, len(photo_id), block_rows):
            block = feats[start : start + block_rows]
            check_finite(partial, "'features'", block, photo_id[start : start + block_rows], row0=start)
            hasher.add_block(block)
        del f["done"]
        del f.attrs["inputs_sha256"]
        f.attrs["complete"] = True
        f.attrs["content_id"] = hasher.hexdigest()
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, path)
    validate_feature_store(path)
    remember_written(path)
    return path
