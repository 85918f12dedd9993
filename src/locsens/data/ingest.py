"""Ingestion: YFCC100M-format TSV files -> one validated ``locsens.dataset`` store.

One streaming pass over the files (:class:`locsens.data.yfcc.YfccReader`) keeps, per parsed photo,
only compact arrays (photo id, user index, lat, lon, provisional tag ids in CSR form: ~36 bytes
plus 4 per tag occurrence; the numpy steps below peak at ~14 bytes per tag occurrence, ~4.5 GB
for 320M occurrences); strings live once in the tag and user dictionaries. Then, in numpy:

1. Vocabulary (as the paper): count every normalised tag occurrence, drop the ``drop_top`` most
   frequent, keep the next ``vocab_size``; order by count, ties alphabetically. ``vocab_count`` is
   the count that ranked each tag (over all photos the parser kept).
2. Photos: keep those with ``min_tags``..``max_tags`` vocabulary tags (duplicates kept unless
   ``dedupe_tags``); a photo id seen again (across files) is dropped as ``duplicate_photo_id``.
3. Splits, seeded: counts (``{"test": 500000, "val": 250000}``, the rest train) or fractions
   (floats < 1), drawn ``by`` (a key of the split: ``random`` photos, the paper; ``user``: whole users,
   so no user is in two splits; ``cell``: whole H3 cells of ``cell_resolution`` (equal-area hexagons,
   resolution 2 ~ 87,000 km^2, 3 ~ 12,000 km^2), so test places were never seen in training). Users and
   cells go, in a seeded order, to test then val until each reaches its size (it overshoots by at most
   the last group's photos).
4. Geography: town/region/country/continent of each kept photo (:mod:`locsens.data.geography`).

Every line read ends in exactly one bucket of the report (kept or a reason), printed as a table
and stored in the store's ``n_dropped`` attribute. Nothing usable left is an error, never an empty
store: no kept photo, an empty vocabulary or an empty split raises :class:`IngestError` with the
report's table. The store records its inputs (path, size, sha256, hashed while parsing) and the
ingest config in ``made_from``.

CLI: ``python -m locsens.data.ingest IN.tsv [IN2.tsv ...] --out store.h5 [--strict] ...``
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from locsens.data.geography import FAR_FROM_TOWN_KM, reverse_geocode
from locsens.data.store import SPLIT_IDS, write_dataset_store
from locsens.data.yfcc import DROP_REASONS, KEPT, MALFORMED_REASONS, ParseStats, YfccReader
from locsens.files import file_sha256, require_file

INGEST_REASONS = ("too_few_vocab_tags", "too_many_vocab_tags", "duplicate_photo_id")
PAPER_SPLIT = {"test": 500_000, "val": 250_000}


class IngestError(ValueError):
    """Ingestion left nothing usable (no photo, no vocabulary, an empty split); the message has the reason table."""


def describe_input(path: str | os.PathLike) -> dict:
    """What a store records of a raw input file: path, size, mtime, compression and the sha256 of its bytes."""
    from locsens.data.compressed import detect_compression

    path = Path(path)
    st = path.stat()
    return {
        "path": str(path),
        "size": int(st.st_size),
        "mtime_ns": int(st.st_mtime_ns),
        "compression": detect_compression(path),
        "sha256": file_sha256(path),
    }


@dataclass
class IngestReport:
    """Where every line went, what was built."""

    out_path: Path
    lines: int
    kept: int
    reasons: dict[str, int]  # every non-kept reason (malformed, parser drops, ingest drops) -> lines
    parse: ParseStats
    vocab_size: int
    split_sizes: dict[str, int]
    far_from_town: int  # kept photos whose matched town is > FAR_FROM_TOWN_KM away (not dropped)
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.reasons.values())

    def table(self) -> str:
        """Kept/dropped rows by reason, one per line, with shares of all lines read."""
        total = max(self.lines, 1)
        rows = [("kept", self.kept)] + [(r, n) for r, n in self.reasons.items()]
        width = max(len(r) for r, _ in rows) + 2
        kind = {r: "malformed" for r in MALFORMED_REASONS} | {r: "dropped" for r in (*DROP_REASONS, *INGEST_REASONS)}
        out = [f"{'reason':<{width}}{'kind':<11}{'lines':>14}{'share':>9}"]
        for r, n in rows:
            out.append(f"{r:<{width}}{kind.get(r, ''):<11}{n:>14,}{100 * n / total:>8.2f}%")
        out.append(f"{'total':<{width}}{'':<11}{self.lines:>14,}{100.0:>8.2f}%")
        out.append(
            f"vocabulary {self.vocab_size:,} tags; splits "
            + ", ".join(f"{k} {v:,}" for k, v in self.split_sizes.items())
            + f"; {self.far_from_town:,} kept photos > {FAR_FROM_TOWN_KM:.0f} km from their town;"
            + f" {self.lines / max(self.seconds, 1e-9):,.0f} lines/s -> {self.out_path}"
        )
        return "\n".join(out)


def _split_count(name: str, value: float, n: int) -> int:
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"split {name}={value!r}: expected a count >= 0 or a fraction in [0, 1)")
    if isinstance(value, float) and not value.is_integer():
        if value >= 1:
            raise ValueError(f"split {name}={value!r}: a fraction must be < 1 (use an integer for a count)")
        return int(round(value * n))
    if isinstance(value, float) and value < 1:  # 0.0
        return 0
    return int(value)


SPLIT_BY = ("random", "user", "cell")
SPLIT_KEYS = ("test", "val", "by", "cell_resolution")


def cell_index(lat: np.ndarray, lon: np.ndarray, resolution: int) -> np.ndarray:
    """Dense ids of the H3 cells (equal-area hexagons) of ``resolution`` holding each point (degrees)."""
    import h3

    if not 0 <= int(resolution) <= 15:
        raise ValueError(f"split.cell_resolution={resolution}: an H3 resolution is 0..15")
    cells = np.array([h3.str_to_int(h3.latlng_to_cell(float(a), float(b), int(resolution))) for a, b in zip(lat, lon)])
    return np.unique(cells, return_inverse=True)[1].reshape(-1) if len(cells) else np.zeros(0, np.int64)


def assign_splits(
    n: int,
    user_index: np.ndarray,
    split: Mapping[str, float],
    seed: int,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
) -> np.ndarray:
    """int8 split id per row (0 train, 1 val, 2 test); see the module docstring for the rules."""
    unknown = set(split) - set(SPLIT_KEYS)
    if unknown:
        raise ValueError(
            f"split: unknown keys {sorted(unknown)}; give 'test' and/or 'val' (train is the rest), 'by' "
            f"({' | '.join(SPLIT_BY)}) and for by=cell 'cell_resolution'"
        )
    by = split.get("by", "random")
    if by not in SPLIT_BY:
        raise ValueError(f"split.by={by!r}: expected one of {', '.join(SPLIT_BY)}")
    if by == "cell" and (lat is None or lon is None):
        raise ValueError("split.by=cell needs the photos' locations")
    n_test = _split_count("test", split.get("test", 0), n)
    n_val = _split_count("val", split.get("val", 0), n)
    if n_test + n_val > n:
        raise IngestError(f"split: test={n_test} + val={n_val} photos asked but only {n} photos were kept")
    rng = np.random.default_rng(seed)
    out = np.full(n, SPLIT_IDS["train"], dtype=np.int8)
    if by == "random":
        perm = rng.permutation(n)
        out[perm[:n_test]] = SPLIT_IDS["test"]
        out[perm[n_test : n_test + n_val]] = SPLIT_IDS["val"]
        return out
    group = user_index if by == "user" else cell_index(lat, lon, split.get("cell_resolution", 2))
    n_groups = int(group.max()) + 1 if n else 0
    photos_per_group = np.bincount(group, minlength=n_groups)
    order = rng.permutation(n_groups)
    start = np.cumsum(photos_per_group[order]) - photos_per_group[order]  # photos before each group
    group_split = np.full(n_groups, SPLIT_IDS["train"], dtype=np.int8)
    group_split[order[start < n_test]] = SPLIT_IDS["test"]
    rest = order[start >= n_test]
    rest_start = np.cumsum(photos_per_group[rest]) - photos_per_group[rest]
    group_split[rest[rest_start < n_val]] = SPLIT_IDS["val"]
    return group_split[group]


def select_vocabulary(counts: np.ndarray, names: Sequence[str], drop_top: int, vocab_size: int) -> np.ndarray:
    """Ids (into ``names``) of the vocabulary: rank by count desc then name, skip ``drop_top``, take ``vocab_size``."""
    want = drop_top + vocab_size
    if len(counts) > want:
        cutoff = -np.partition(-counts, want - 1)[want - 1]
        candidates = np.flatnonzero(counts >= cutoff)  # every tie at the cut-off competes alphabetically
    else:
        candidates = np.arange(len(counts))
    ranked = sorted(candidates.tolist(), key=lambda i: (-int(counts[i]), names[i]))
    return np.array(ranked[drop_top:want], dtype=np.int64)


def read_wordlist(path: str | os.PathLike) -> frozenset[str]:
    """Words, one per line (blank lines ignored, lowercased); a file that is not UTF-8 text is refused,
    naming its line."""
    path = require_file(path, "ingest.wordlist", "a UTF-8 text file of words, one a line")
    words = set()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                word = raw.decode("utf-8").strip().lower()
            except UnicodeDecodeError as e:
                raise IngestError(
                    f"ingest.wordlist: {path} line {lineno} is not UTF-8 text ({e.reason} at byte {e.start}); "
                    "expected a text file of words, one a line"
                ) from None
            if "\0" in word:
                raise IngestError(f"ingest.wordlist: {path} line {lineno} holds a NUL byte: not a text file of words")
            if word:
                words.add(word)
    return frozenset(words)


@dataclass
class _Parsed:
    """Every parsed photo as compact arrays; tags as provisional ids into ``tag_names`` (CSR)."""

    photo_id: np.ndarray
    user_index: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    indptr: np.ndarray
    tag_ids: np.ndarray
    user_names: list[str]
    tag_names: list[str]
    stats: ParseStats


@dataclass
class _Kept:
    """The photos that stay, with vocabulary tags (CSR) and users renumbered to those present."""

    keep: np.ndarray
    indptr: np.ndarray
    tags: np.ndarray
    user_index: np.ndarray
    users: list[str]
    reasons: dict[str, int]


def _parse(paths: list[Path], words, strict: bool, progress, dedupe_tags: bool) -> _Parsed:
    """One streaming pass over the files: ~36 bytes per photo plus 4 per tag occurrence; strings once each."""
    photo_id, user_index, lat, lon = array("q"), array("i"), array("d"), array("d")
    indptr, tag_ids = array("q", [0]), array("i")
    user_of: dict[str, int] = {}
    tag_of: dict[str, int] = {}
    stats = ParseStats()
    tag_cache: dict = {}
    for path in paths:
        reader = YfccReader(path, wordlist=words, strict=strict, progress=progress, tag_cache=tag_cache)
        try:
            for pid, user, x, y, tags in reader:
                photo_id.append(pid)
                u = user_of.get(user)
                if u is None:
                    u = user_of[user] = len(user_of)
                user_index.append(u)
                lon.append(x)
                lat.append(y)
                if dedupe_tags:
                    tags = dict.fromkeys(tags)
                for t in tags:
                    i = tag_of.get(t)
                    if i is None:
                        i = tag_of[t] = len(tag_of)
                    tag_ids.append(i)
                indptr.append(len(tag_ids))
        finally:
            stats.merge(reader.stats)
    if stats.kept == 0:
        raise IngestError(
            f"ingest: no photo of {', '.join(map(str, paths))} was kept (LocSens needs photos with user tags "
            f"and a location):\n{_reason_table(stats)}"
        )
    as_np = lambda buf, dtype: np.frombuffer(buf, dtype=dtype)  # noqa: E731  (views: no copy)
    return _Parsed(
        as_np(photo_id, np.int64),
        as_np(user_index, np.int32),
        as_np(lat, np.float64),
        as_np(lon, np.float64),
        as_np(indptr, np.int64),
        as_np(tag_ids, np.int32),
        list(user_of),
        list(tag_of),
        stats,
    )


def _vocabulary(parsed: _Parsed, drop_top: int, vocab_size: int, words) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(vocabulary, its counts, provisional tag id -> vocabulary id or -1)."""
    counts = np.bincount(parsed.tag_ids, minlength=len(parsed.tag_names)).astype(np.int64)
    vocab_ids = select_vocabulary(counts, parsed.tag_names, drop_top, vocab_size)
    vocab = [parsed.tag_names[i] for i in vocab_ids]
    if not vocab:
        raise IngestError(
            f"ingest: the vocabulary is empty: {len(parsed.tag_names)} distinct normalised tags, of which drop_top={drop_top} "
            f"are dropped (tags with digits are never kept){'; ' + str(len(words)) + ' words in the word list' if words else ''}\n"
            f"{_reason_table(parsed.stats)}"
        )
    remap = np.full(len(parsed.tag_names), -1, dtype=np.int32)
    remap[vocab_ids] = np.arange(len(vocab_ids), dtype=np.int32)
    return vocab, counts[vocab_ids], remap


def _keep_photos(parsed: _Parsed, remap: np.ndarray, min_tags: int, max_tags: int, vocab_size: int) -> _Kept:
    """Photos with min_tags..max_tags vocabulary tags, first occurrence of each photo id; the rest counted by reason."""
    n = len(parsed.photo_id)
    new_ids = remap[parsed.tag_ids]
    in_vocab = new_ids >= 0
    # vocabulary tags per photo from a running count (no per-entry row index: ~4 bytes per tag less)
    running = np.zeros(len(in_vocab) + 1, dtype=np.int32 if len(in_vocab) < 2**31 else np.int64)
    np.cumsum(in_vocab, out=running[1:])
    n_vocab = (running[parsed.indptr[1:]] - running[parsed.indptr[:-1]]).astype(np.int64)
    del running
    _, first = np.unique(parsed.photo_id, return_index=True)
    unique_id = np.zeros(n, dtype=bool)
    unique_id[first] = True
    too_few = n_vocab < min_tags
    too_many = ~too_few & (n_vocab > max_tags)
    duplicate = ~too_few & ~too_many & ~unique_id
    keep = ~(too_few | too_many | duplicate)
    if not keep.any():
        raise IngestError(
            f"ingest: no photo has {min_tags}..{max_tags} vocabulary tags ({int(too_few.sum())} too few, "
            f"{int(too_many.sum())} too many; vocabulary of {vocab_size} tags)\n{_reason_table(parsed.stats)}"
        )
    tags = new_ids[in_vocab & np.repeat(keep, np.diff(parsed.indptr))]
    indptr = np.concatenate([[0], np.cumsum(n_vocab[keep])]).astype(np.int64)
    present_users, user_index = np.unique(parsed.user_index[keep], return_inverse=True)
    reasons = {r: int(parsed.stats.reasons[r]) for r in (*MALFORMED_REASONS, *DROP_REASONS)}
    reasons.update(
        too_few_vocab_tags=int(too_few.sum()),
        too_many_vocab_tags=int(too_many.sum()),
        duplicate_photo_id=int(duplicate.sum()),
    )
    return _Kept(
        keep, indptr, tags, user_index.astype(np.int32).ravel(), [parsed.user_names[u] for u in present_users], reasons
    )


def _splits(kept: _Kept, split: dict, seed: int, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    n_kept = int(kept.keep.sum())
    split_id = assign_splits(n_kept, kept.user_index, split, seed, lat=lat, lon=lon)
    # train must not be empty; val / test only when asked for (an explicit 0 is a store without that split)
    asked = {"train": True, **{name: bool(split.get(name, 0)) for name in ("val", "test")}}
    empty = [name for name, i in SPLIT_IDS.items() if asked[name] and not (split_id == i).any()]
    if empty:
        raise IngestError(
            f"ingest: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty ({n_kept} photos kept, "
            f"split {split}); every split needs photos (train gets what test and val leave)"
        )
    return split_id


def ingest(
    tsv_paths: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    vocab_size: int = 100_000,
    drop_top: int = 10,
    min_tags: int = 1,
    max_tags: int = 15,
    wordlist: str | os.PathLike | None = None,
    split: Mapping[str, float] | None = None,
    seed: int = 0,
    dedupe_tags: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    print_report: bool = True,
    made_from: dict | None = None,
) -> IngestReport:
    """Build a ``locsens.dataset`` store at ``out_path`` from YFCC100M-format files (module docstring):
    parse, vocabulary, photos kept, splits, geography, write.

    ``made_from``: lineage entries to record beside the inputs and ingest config (prepare passes the
    feature store it pairs the dataset with, and the source it was asked for)."""
    t0 = time.perf_counter()
    paths = [Path(tsv_paths)] if isinstance(tsv_paths, (str, os.PathLike)) else [Path(p) for p in tsv_paths]
    if not paths:
        raise ValueError("ingest: no input files given")
    for p in paths:
        require_file(p, "ingest: input", "a YFCC100M metadata file")
        if p.stat().st_size == 0:
            raise IngestError(f"ingest: input {p} is empty (0 bytes)")
    if vocab_size < 1 or drop_top < 0:
        raise ValueError(
            f"ingest: need vocab_size >= 1 and drop_top >= 0, got vocab_size={vocab_size}, drop_top={drop_top}"
        )
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:  # refuse before the long parse, not after
        raise FileExistsError(f"{out_path} already exists; pass overwrite=True (--overwrite) to rebuild it")
    if min_tags < 1 or max_tags < min_tags:
        raise ValueError(f"ingest: need 1 <= min_tags <= max_tags, got min_tags={min_tags}, max_tags={max_tags}")
    split = dict(PAPER_SPLIT if split is None else split)
    words = read_wordlist(wordlist) if wordlist is not None else None
    config = dict(
        inputs=[str(p) for p in paths],
        vocab_size=vocab_size,
        drop_top=drop_top,
        min_tags=min_tags,
        max_tags=max_tags,
        wordlist=str(wordlist) if wordlist is not None else None,
        split=split,
        seed=seed,
        dedupe_tags=dedupe_tags,
    )

    described = _in_background(
        lambda: [describe_input(p) for p in paths]
    )  # hashed while parsed (hashlib releases the GIL)
    parsed = _parse(paths, words, strict, progress, dedupe_tags)
    vocab, vocab_count, remap = _vocabulary(parsed, drop_top, vocab_size, words)
    kept = _keep_photos(parsed, remap, min_tags, max_tags, len(vocab))
    lat, lon = parsed.lat[kept.keep], parsed.lon[kept.keep]
    split_id = _splits(kept, split, seed, lat, lon)
    placement = reverse_geocode(lat, lon)
    stats, n_kept = parsed.stats, len(split_id)
    assert stats.reasons[KEPT] == len(parsed.photo_id) and n_kept + sum(kept.reasons.values()) == stats.lines, (
        "every line must land in one bucket"
    )
    write_dataset_store(
        out_path,
        photo_id=parsed.photo_id[kept.keep],
        user_index=kept.user_index,
        users=kept.users,
        lat=lat,
        lon=lon,
        tags_indptr=kept.indptr,
        tags_indices=kept.tags,
        places=placement.places,
        place_index=placement.place_index,
        place_names=placement.place_names(),
        split=split_id,
        vocab=vocab,
        vocab_count=vocab_count,
        source=", ".join(str(p) for p in paths),
        ingest_config=config,
        n_dropped=kept.reasons,
        made_from={"inputs": described(), "ingest_config": config, **(made_from or {})},
        overwrite=overwrite,
    )
    report = IngestReport(
        out_path=out_path,
        lines=stats.lines,
        kept=n_kept,
        reasons=kept.reasons,
        parse=stats,
        vocab_size=len(vocab),
        split_sizes={name: int((split_id == i).sum()) for name, i in SPLIT_IDS.items()},
        far_from_town=int(placement.far_from_town().sum()),
        seconds=time.perf_counter() - t0,
        config=config,
    )
    if print_report:
        print(report.table())
    return report


def _in_background(fn):
    """Run ``fn`` in a daemon thread (an error elsewhere never waits for it); returns a getter of its result."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised by the getter
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def result():
        thread.join()
        if "error" in out:
            raise out["error"]
        return out["value"]

    return result


def _reason_table(stats: ParseStats) -> str:
    """Lines by reason (what the parser saw), for error messages."""
    rows = sorted(((r, n) for r, n in stats.reasons.items() if n), key=lambda x: -x[1])
    return "\n".join([f"  {'lines read':<22}{stats.lines:>12,}"] + [f"  {r:<22}{n:>12,}" for r, n in rows])


def _count_or_fraction(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m locsens.data.ingest",
        description="YFCC100M-format metadata (plain, .bz2 or .gz) -> locsens.dataset HDF5 store",
    )
    ap.add_argument(
        "inputs", nargs="+", help="yfcc100m_dataset-format files (plain, bzip2 or gzip; told apart by content)"
    )
    ap.add_argument("--out", required=True, help="store to write (.h5)")
    ap.add_argument("--vocab-size", type=int, default=100_000)
    ap.add_argument("--drop-top", type=int, default=10, help="most frequent tags left out (paper: 10)")
    ap.add_argument("--min-tags", type=int, default=1)
    ap.add_argument("--max-tags", type=int, default=15)
    ap.add_argument("--wordlist", default=None, help="file of allowed tags, one per line")
    ap.add_argument(
        "--test", type=_count_or_fraction, default=PAPER_SPLIT["test"], help="test photos: count, or fraction if < 1"
    )
    ap.add_argument(
        "--val", type=_count_or_fraction, default=PAPER_SPLIT["val"], help="val photos: count, or fraction if < 1"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--split-by", choices=SPLIT_BY, default="random", help="random photos | whole users | whole H3 cells"
    )
    ap.add_argument("--cell-resolution", type=int, default=2, help="H3 resolution of --split-by cell (2 ~ 87,000 km^2)")
    ap.add_argument("--dedupe-tags", action="store_true", help="count each tag once per photo")
    ap.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    ingest(
        a.inputs,
        a.out,
        vocab_size=a.vocab_size,
        drop_top=a.drop_top,
        min_tags=a.min_tags,
        max_tags=a.max_tags,
        wordlist=a.wordlist,
        split={"test": a.test, "val": a.val, "by": a.split_by}
        | ({"cell_resolution": a.cell_resolution} if a.split_by == "cell" else {}),
        seed=a.seed,
        dedupe_tags=a.dedupe_tags,
        strict=a.strict,
        overwrite=a.overwrite,
        progress=False if a.no_progress else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
