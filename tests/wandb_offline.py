"""Reading a W&B offline run back, for the tests: what `wandb sync` would upload (history, config, summary).

wandb >= 0.19 writes ``run-*.wandb`` files from its Go core and ships no Python reader, so the tests read
the LevelDB-style framing here; the payloads parse with ``wandb.proto``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7  # the .wandb file is a LevelDB-style log: 32 KiB blocks of framed records
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_run_records(path: str | Path) -> list:
    """The protobuf ``Record``s of a ``run-*.wandb`` file (what ``wandb sync`` would upload).

    wandb >= 0.19 writes these files from its Go core and ships no Python reader, so the framing
    (7-byte file header ``:W&B`` + magic + version; per record crc32c, length, type; records split
    across blocks as first/middle/last) is read here; payloads parse with ``wandb.proto``.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (header {data[:4]!r})")
    records, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # the tail of a block too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        payload, pos = data[pos + _HEADER : pos + _HEADER + length], pos + _HEADER + length
        if kind == _FULL:
            records.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            records.append(pending + payload)
        elif kind == 0 and length == 0:  # zero padding at the end of a block or file
            continue
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")
    return [wandb_internal_pb2.Record.FromString(r) for r in records]


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """``{"history": [row dicts], "config": {...}, "summary": {...}}`` of a ``run-*.wandb`` file.

    Read it after the writing process has exited, or after ``wandb.teardown()`` in that process:
    ``run.finish()`` can return before W&B's service has flushed the last records to the file.
    """
    history, config, summary = [], {}, {}
    for record in read_run_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind in ("config", "run"):  # the initial config travels in the run record, updates as config records
            update = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update})
        elif kind == "summary":
            summary.update(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update}
            )
    return {"history": history, "config": config, "summary": summary}
