"""Photos -> image-feature store (``locsens.features``, keyed by photo id), resumable and multi-device.

Inputs are a folder of images named by photo id (``<id>.jpg``, or Flickr's ``<id>_<secret>.jpg``, any
extension PIL reads, nested folders allowed, as YFCC100M mirrors lay them out) or a list file of
``<photo id> <path>`` lines. Images are decoded with PIL in DataLoader worker processes and run through
a pretrained backbone (:mod:`locsens.features.backbones`) in Lightning's predict loop, so
``devices=N`` spreads a large collection over N accelerators.

Failures never stop a run: a missing, empty or undecodable image gets ``valid=False`` and zero
features in the store and a line in the report ``<store>.failures.tsv`` (photo_id, path, reason);
datasets built on the store drop such ids (``FeatureStore.rows_for`` returns -1 for them).

Resumable, and never a store that looks complete but is not. Rows go to ``.<store>.partial.h5``
(``complete=False``, a ``done`` mask, see :func:`locsens.data.store.create_partial_feature_store`):

1. Each rank's :class:`FeatureShardWriter` buffers predictions and every ``flush_every`` batches
   writes them to a shard file ``.<store>.shards/rank<r>-<pid>-<seq>.npz`` (temp file + rename: a
   shard is whole or absent; no two processes ever write the same HDF5 file).
2. Rank 0, after each of its own flushes, merges every shard present into the partial store --
   failures appended to the pending report, features written and flushed, then the ``done`` mask,
   then the shard deleted. Merging is idempotent, so a kill at any point only repeats work.
3. When every row is done the partial store gets ``complete=True`` and is renamed to ``<store>``.

A rerun of the same command (same inputs and backbone) first merges leftover shards, then extracts
only rows not yet done. An interrupted run loses at most ``flush_every`` batches per rank.

Several GPUs: ``python extract_features.py images=/data/photos accelerator=gpu devices=4`` -- Lightning
starts one process per GPU (DDP), its DistributedSampler gives each a share of the rows not yet done,
each decodes with ``num_workers`` processes, and rank 0 merges all shards and finalises. Tested:
``devices=2`` with gloo on CPU gives the same store as one process. (Several nodes would also need
``num_nodes`` passed to the Trainer, not exposed here, and the store's folder on a shared filesystem.)
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from locsens.data import store
from locsens.features.backbones import BackboneSpec, Image, Preprocessing, load_backbone
from locsens.files import atomic_path

PHOTO_NAME = re.compile(r"^(\d+)(?:_[0-9A-Za-z]+)?$")  # "<id>" or Flickr's "<id>_<secret>"


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def image_extensions() -> set[str]:
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_image_folder(folder: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(photo ids, paths) of every image file under ``folder`` (recursive), sorted by photo id.

    A file counts as an image by its extension (any format PIL opens); its name without extension
    must be the photo id (or ``<id>_<secret>``). Other names and duplicate ids are errors.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder")
    exts = image_extensions()
    found: dict[int, str] = {}
    bad: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in exts:
                continue
            path = os.path.join(root, name)
            m = PHOTO_NAME.match(stem)
            if m is None:
                bad.append(path)
                continue
            pid = int(m.group(1))
            if pid in found:
                raise ValueError(f"photo id {pid} appears twice: {found[pid]} and {path}")
            found[pid] = path
    if bad:
        raise ValueError(
            f"{folder}: {len(bad)} image files are not named <photo id>.<ext> "
            f"(or <photo id>_<secret>.<ext>), e.g. {bad[:5]}; use a list file of '<photo id> <path>' lines"
        )
    if not found:
        raise ValueError(f"{folder}: no image files found (extensions PIL reads, e.g. .jpg .png)")
    ids = np.array(sorted(found), dtype=np.int64)
    return ids, [found[int(i)] for i in ids]


def read_image_list(list_file: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(photo ids, paths) from a text file of ``<photo id> <path>`` lines (tab or spaces; ``#`` comments).

    Relative paths are taken relative to the list file's folder. Listed files need not exist (missing
    ones are reported as failures at extraction); malformed lines and duplicate ids are errors.
    """
    list_file = Path(list_file)
    ids, paths, seen = [], [], {}
    with open(list_file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise ValueError(f"{list_file}:{lineno}: expected '<photo id> <path>', got {line!r}")
            pid = int(parts[0])
            if pid in seen:
                raise ValueError(f"{list_file}:{lineno}: photo id {pid} already listed on line {seen[pid]}")
            seen[pid] = lineno
            ids.append(pid)
            paths.append(os.path.join(list_file.parent, parts[1]) if not os.path.isabs(parts[1]) else parts[1])
    if not ids:
        raise ValueError(f"{list_file}: no '<photo id> <path>' lines")
    return np.array(ids, dtype=np.int64), paths


def read_inputs(images: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """A folder of images or a list file, whichever ``images`` is."""
    return list_image_folder(images) if Path(images).is_dir() else read_image_list(images)


def inputs_sha256(photo_id: np.ndarray, paths: Sequence[str]) -> str:
    h = hashlib.sha256(np.asarray(photo_id, dtype=np.int64).tobytes())
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------
def load_image(path: str, preprocessing: Preprocessing) -> tuple[torch.Tensor | None, str]:
    """(tensor, "") for a readable image; (None, reason) for a missing, empty or undecodable file."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
    except OSError:
        return None, "missing file"
    try:
        with Image.open(path) as image:
            image.load()
            return preprocessing(image), ""
    except Exception as e:  # PIL raises many types for corrupt data; each is a per-image failure
        return None, f"unreadable image: {type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")


class ImageFiles(Dataset):
    """Rows of the feature store -> preprocessed images. Paths are kept as one bytes array so
    forked workers do not copy a million Python strings (refcount writes)."""

    def __init__(self, rows: np.ndarray, paths: Sequence[str], preprocessing: Preprocessing):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.paths = np.array([os.fsencode(paths[r]) for r in self.rows])
        self.preprocessing = preprocessing
        self.blank = torch.zeros(3, preprocessing.crop, preprocessing.crop)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        image, error = load_image(os.fsdecode(self.paths[i]), self.preprocessing)
        return {
            "row": int(self.rows[i]),
            "image": self.blank if image is None else image,
            "ok": image is not None,
            "error": error,
        }


# --------------------------------------------------------------------------------------------
# the extraction: plan, data, model, writer
# --------------------------------------------------------------------------------------------
def failures_report_path(out: Path) -> Path:
    return out.with_name(out.name + ".failures.tsv")


@dataclass
class ExtractionPlan:
    """Everything every rank needs to know about one extraction: inputs, backbone, file names."""

    out: Path
    photo_id: np.ndarray
    paths: list[str]
    spec: BackboneSpec
    extractor: str
    dtype: str = "float32"
    restart: bool = False
    overwrite: bool = False
    inputs_sha256: str = field(init=False)

    def __post_init__(self):
        self.out = Path(self.out)
        self.inputs_sha256 = inputs_sha256(self.photo_id, self.paths)

    @property
    def partial(self) -> Path:
        return store.partial_feature_store_path(self.out)

    @property
    def shard_dir(self) -> Path:
        return self.out.with_name(f".{self.out.name}.shards")

    @property
    def pending_failures(self) -> Path:
        return self.out.with_name(f".{self.out.name}.partial.failures.tsv")

    def prepare(self) -> None:
        """Rank 0: create the partial store, or reopen it (same inputs and backbone) and merge leftover shards."""
        if self.restart:
            self.partial.unlink(missing_ok=True)
        if not self.partial.exists():  # fresh start: drop leftovers of a run whose partial store is gone
            self.pending_failures.unlink(missing_ok=True)
            shutil.rmtree(self.shard_dir, ignore_errors=True)
            store.create_partial_feature_store(
                self.out,
                photo_id=self.photo_id,
                dim=self.spec.dim,
                extractor=self.extractor,
                inputs_sha256=self.inputs_sha256,
                dtype=self.dtype,
            )
        else:  # resuming: refuse a partial store made from other inputs or another backbone
            store.open_partial_feature_store(
                self.out, extractor=self.extractor, inputs_sha256=self.inputs_sha256
            ).close()
        self.merge_shards()

    def todo_rows(self) -> np.ndarray:
        with h5py.File(self.partial, "r") as f:
            return np.flatnonzero(~f["done"][:])

    def merge_shards(self) -> int:
        """Rank 0: move every shard's rows into the partial store (idempotent); returns rows merged."""
        shards = sorted(self.shard_dir.glob("rank*.npz"))
        if not shards:
            return 0
        merged = 0
        with store.open_partial_feature_store(
            self.out, extractor=self.extractor, inputs_sha256=self.inputs_sha256
        ) as f:
            for shard in shards:
                with np.load(shard) as z:
                    rows, feats, ok, errors = z["rows"], z["features"], z["valid"], z["errors"]
                rows, first = np.unique(rows, return_index=True)  # a DistributedSampler pads with repeats
                feats, ok, errors = feats[first], ok[first], errors[first]
                with open(self.pending_failures, "a", encoding="utf-8") as fh:
                    for r in np.flatnonzero(~ok):
                        fh.write(f"{self.photo_id[rows[r]]}\t{self.paths[rows[r]]}\t{errors[r]}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                lo, hi = int(rows[0]), int(rows[-1]) + 1  # masks are read and written over this span only
                if hi - lo == len(rows):
                    f["features"][lo:hi] = feats
                else:
                    f["features"][rows] = feats
                valid = f["valid"][lo:hi]
                valid[rows - lo] = ok
                f["valid"][lo:hi] = valid
                f.flush()  # features and validity on disk before the rows are marked done
                done = f["done"][lo:hi]
                done[rows - lo] = True
                f["done"][lo:hi] = done
                f.flush()
                shard.unlink()
                merged += len(rows)
        return merged

    def finalise(self) -> dict:
        """Rank 0, all rows done: write the failure report, then the store (atomic renames); returns a summary."""
        self.merge_shards()
        failures: dict[int, tuple[str, str]] = {}
        if self.pending_failures.exists():
            with open(self.pending_failures, encoding="utf-8") as fh:
                for line in fh:
                    pid, path, reason = line.rstrip("\n").split("\t", 2)
                    failures[int(pid)] = (path, reason)
        with h5py.File(self.partial, "r") as f:
            invalid_rows = np.flatnonzero(~f["valid"][:])
        failures = {
            int(self.photo_id[r]): failures.get(int(self.photo_id[r]), (self.paths[r], "reason not recorded"))
            for r in invalid_rows
        }
        with atomic_path(failures_report_path(self.out)) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(["photo_id", "path", "reason"])
            for pid in sorted(failures):
                w.writerow([pid, *failures[pid]])
        store.finalise_feature_store(self.out, overwrite=self.overwrite)
        self.pending_failures.unlink(missing_ok=True)
        shutil.rmtree(self.shard_dir, ignore_errors=True)  # merged: only torn temp files of killed writers remain
        return self.summary()

    def summary(self) -> dict:
        """What the finished extraction wrote (read back from the store and its report)."""
        fs = store.FeatureStore(self.out)
        return {
            "store": str(self.out),
            "report": str(failures_report_path(self.out)),
            "n_photos": len(fs.photo_id),
            "n_failed": int((~fs.valid).sum()),
            "extractor": fs.extractor,
        }


class ImageFolderData(L.LightningDataModule):
    """Rank 0 prepares the partial store in ``setup`` (after DDP init); every rank then extracts the rows
    not yet done (Lightning's DistributedSampler splits them across ranks)."""

    def __init__(self, plan: ExtractionPlan, batch_size: int, num_workers: int):
        super().__init__()
        self.plan, self.batch_size, self.num_workers = plan, batch_size, num_workers
        self.todo: np.ndarray | None = None

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if self.trainer.global_rank == 0:
            self.plan.prepare()
        strategy.barrier("locsens_features_prepared")
        self.todo = self.plan.todo_rows()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            ImageFiles(self.todo, self.plan.paths, self.plan.spec.preprocessing),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )


class FeatureExtractor(L.LightningModule):
    """predict_step: a batch of preprocessed images -> pooled backbone features (float32, zeros for failures)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.eval()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        feats = self.net.features(batch["image"]).float()
        return feats * batch["ok"].to(feats.device, feats.dtype)[:, None]


class FeatureShardWriter(BasePredictionWriter):
    """Buffers predictions and writes them as whole shard files every ``flush_every`` batches; at the end
    (after a barrier) rank 0 merges all shards and finalises the store."""

    def __init__(self, plan: ExtractionPlan, flush_every: int = 20):
        super().__init__(write_interval="batch")
        self.plan, self.flush_every = plan, max(1, int(flush_every))
        self.buffer: list[tuple] = []
        self.seq = 0
        self.summary: dict | None = None

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.buffer.append(
            (batch["row"].cpu().numpy(), prediction.cpu().numpy(), batch["ok"].cpu().numpy(), list(batch["error"]))
        )
        if len(self.buffer) >= self.flush_every:
            self.flush(trainer.global_rank)

    def flush(self, rank: int) -> None:
        if not self.buffer:
            return
        self.plan.shard_dir.mkdir(parents=True, exist_ok=True)
        rows, feats, ok, errors = zip(*self.buffer)
        shard = self.plan.shard_dir / f"rank{rank}-{os.getpid()}-{self.seq:06d}.npz"
        with atomic_path(shard) as tmp, open(tmp, "wb") as fh:  # the hidden temp never matches the shard pattern
            np.savez(
                fh,
                rows=np.concatenate(rows),
                features=np.concatenate(feats).astype(self.plan.dtype),
                valid=np.concatenate(ok),
                errors=np.array(sum(errors, []), dtype=str),
            )
        self.buffer.clear()
        self.seq += 1
        if rank == 0:  # keeps the partial store current and the shard folder small (other ranks' too)
            self.plan.merge_shards()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.flush(trainer.global_rank)  # finished batches survive an interruption (Ctrl-C, an error)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.flush(trainer.global_rank)
        trainer.strategy.barrier("locsens_features_written")
        if trainer.global_rank == 0:
            self.summary = self.plan.finalise()


def extract_features(
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backbone: str = "efficientnet_lite0",
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int = 4,
    flush_every: int = 20,
    dtype: str = "float32",
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    precision: str = "32-true",
    progress: bool = True,
    overwrite: bool = False,
    restart: bool = False,
    callbacks: Sequence[L.Callback] = (),
) -> dict | None:
    """Run ``backbone`` over the images (a folder or a list file) into the feature store ``out``.

    Resumes an interrupted extraction into ``out`` unless ``restart``; refuses an existing complete
    store unless ``overwrite``. ``devices``/``strategy`` are Lightning's (e.g. ``devices=4`` on a 4-GPU
    node runs DDP, each rank decoding and extracting a share). Returns the summary (store, report,
    n_photos, n_failed, extractor) on rank 0, None on other ranks.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=true to rebuild it")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r}; expected 'float32' or 'float16'")
    photo_id, paths = read_inputs(images)
    net, spec, extractor = load_backbone(backbone, weights)
    plan = ExtractionPlan(out, photo_id, paths, spec, extractor, dtype=dtype, restart=restart, overwrite=overwrite)
    writer = FeatureShardWriter(plan, flush_every)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[writer, *callbacks],
    )
    trainer.predict(
        FeatureExtractor(net), datamodule=ImageFolderData(plan, batch_size, num_workers), return_predictions=False
    )
    if trainer.global_rank != 0:
        return None
    if writer.summary is None:  # finalised in a spawned rank 0 (ddp_spawn), or nothing was left to extract
        writer.summary = plan.finalise() if plan.partial.exists() else plan.summary()
    return writer.summary


def extract_from_config(cfg) -> dict | None:
    """``extract_features`` driven by conf/extract.yaml (the entry point ``extract_features.py``)."""
    from locsens.config import validate_extract_config

    cfg = validate_extract_config(cfg)  # typed: restart=no means false, not "a non-empty string"
    summary = extract_features(
        cfg.images,
        cfg.features_path,
        backbone=cfg.backbone.name,
        weights=cfg.backbone.weights,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        flush_every=cfg.flush_every,
        dtype=cfg.dtype,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        progress=cfg.progress,
        overwrite=cfg.overwrite,
        restart=cfg.restart,
    )
    if summary is not None:
        print(
            f"[extract] {summary['store']}: {summary['n_photos']} photos, {summary['n_failed']} without features "
            f"(listed in {summary['report']}); {summary['extractor']}"
        )
    return summary
