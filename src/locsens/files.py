"""Files: the one home for writing an artefact so that nothing written before is lost.

Every artefact of the project (stores, checkpoints, ``results.json``, tables, figures, reports) is
written to a temporary name in its own directory (``.<name>.tmp-<pid>``), flushed to disk and renamed
into place (``os.replace``: atomic within one file system, which a temporary file in the same
directory guarantees). A kill at any moment leaves either the old artefact or the new one, never a
truncated file at the final path. A full disk or a read-only folder raises :class:`ArtefactWriteError`
naming the path and saying the previous version is intact.

Temporary files of processes that died (SIGKILL, power loss) are removed by :func:`remove_stale_temps`
the next time something is written into the directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:\..*)?$")


class ArtefactWriteError(OSError):
    """Writing an artefact failed (disk full, read-only folder, ...); the previous version is intact."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """The temporary name beside ``path`` that this process writes before renaming into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.tmp-<pid>*`` files (and folders) of processes that no longer run; returns them."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        m = TEMP_PATTERN.match(entry.name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
    return removed


def require_file(path: str | os.PathLike, key: str, expected: str = "a file") -> Path:
    """``path`` as a Path if it is an existing regular file; otherwise an error naming ``key``, the path
    and what it is instead (missing, or a directory)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{key}: {path} is a directory, expected {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {path} does not exist (expected {expected})")
    return path


# what HDF5 (which wraps the OS error in a RuntimeError) says for the write errors we name
_ERRNO_TEXT = {
    "No space left on device": errno.ENOSPC,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Disk quota exceeded": errno.EDQUOT,
}


def os_errno(err: BaseException) -> int | None:
    """The errno of a failed write, also when HDF5 only says it in words; None if neither says."""
    code = getattr(err, "errno", None)
    if code is None:
        code = next((c for text, c in _ERRNO_TEXT.items() if text in str(err)), None)
    return code


def describe_os_error(err: BaseException) -> str:
    """A short reason for a failed write: 'no space left on device', 'read-only file system', ..."""
    code = os_errno(err)
    if code is not None:
        return os.strerror(code).lower()
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def is_disk_error(err: BaseException) -> bool:
    return os_errno(err) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


def check_free_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Fail before writing when the file system of ``path`` has clearly less room than ``needed_bytes``."""
    parent = Path(path).parent
    free = shutil.disk_usage(parent).free
    if needed_bytes > free:
        raise ArtefactWriteError(
            errno.ENOSPC,
            f"{path}: needs about {needed_bytes / 2**20:,.1f} MiB but {parent} has "
            f"{free / 2**20:,.1f} MiB free; nothing was written (any previous {Path(path).name} is intact)",
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched; an OS error (disk full,
    read-only folder) becomes :class:`ArtefactWriteError` naming ``path``. ``overwrite=False`` refuses
    an existing ``path`` before anything is written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=true to rebuild it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtefactWriteError(e.errno, f"{path}: cannot create its folder ({describe_os_error(e)})") from e
    remove_stale_temps(path.parent)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, RuntimeError) as e:
        if isinstance(e, (ArtefactWriteError, FileExistsError)) or not is_disk_error(e):
            raise
        raise ArtefactWriteError(
            getattr(e, "errno", None) or errno.EIO,
            f"{path}: could not be written ({describe_os_error(e)}); any previous {path.name} is intact",
        ) from e
    finally:
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            elif tmp.exists() or tmp.is_symlink():
                tmp.unlink()


@contextlib.contextmanager
def temp_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh ``.<name>.tmp-<pid>/`` folder beside ``path`` for building several files, removed on exit
    (whatever happens; what should survive is renamed out of it first)."""
    tmp = temp_path(path)
    remove_stale_temps(tmp.parent)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class JobLogHandler(logging.FileHandler):
    """Hydra's job log file (``hydra.job_logging.handlers.file``), or none when it cannot be opened (a
    read-only world that prepare only reuses): one line on stderr instead of Hydra's bare "Unable to
    configure handler 'file'"; whatever the command then writes fails with its own named error."""

    def __init__(self, filename, mode: str = "a", encoding=None, delay: bool = False, errors=None):
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        if delay:
            return
        try:
            self.stream = self._open()
        except OSError as e:
            self.stream = None
            self.unwritable = describe_os_error(e)
            print(
                f"locsens: the job log {filename} cannot be written ({self.unwritable}); logging to the console only",
                file=sys.stderr,
            )

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(self, "unwritable", None):
            super().emit(record)


class InUseError(RuntimeError):
    """Another process works on the same directory (a concurrent prepare, training or evaluation)."""


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (``.locsens.lock``, flock: released when the process dies)
    or fail at once naming the process that holds it (``wait``: block until it is free instead). Under
    DDP only the launching process locks."""
    import fcntl

    if any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK")):
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(directory / ".locsens.lock", "a+")
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES):
            raise
        # nobody can write there, so nobody can change it under us: read-only work goes on unlocked, and
        # anything this command tries to write fails with its own named error
        logging.getLogger(__name__).warning("%s: %s, not locked for %s", directory, describe_os_error(e), what)
        yield
        return
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise InUseError(
                f"{directory}: {what} is already running there (pid {holder}); wait for it to finish, "
                "or use another directory"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def fsync_file(path: Path) -> None:
    if path.is_symlink() or path.is_dir():
        return
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s folder (atomic across file systems)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def json_default(o):
    """JSON for numpy / torch scalars and arrays (results, metrics)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str:
    """``<sha>`` of the repository this code runs from, with ``-dirty`` when tracked files changed."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("-dirty" if dirty else "")


__all__ = [
    "ArtefactWriteError",
    "InUseError",
    "atomic_path",
    "exclusive",
    "temp_dir",
    "check_free_space",
    "copy_atomic",
    "describe_os_error",
    "file_sha256",
    "git_commit",
    "json_default",
    "remove_stale_temps",
    "temp_path",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
