"""Resumable JSON-lines files: results appended one record a line as they are made, read back on a rerun.

A run can be killed mid-write, so the last line may be torn. Reading drops a
torn (or otherwise unparseable) last line with a warning, and the next append
cuts it off first, so the new record starts on a line of its own; any other
bad line is an error naming the file and line, since dropping it would lose a
finished result silently. Every append is flushed and fsynced.

    >>> log = JsonlLog(Path("out/records.jsonl"))
    >>> if log.find(row="oracle", task_id="t1") is None:
    ...     log.append({"row": "oracle", "task_id": "t1", "solved": True})
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

Record = dict[str, Any]


class JsonlError(ValueError):
    """A line before the last that is not a JSON object: the file is damaged, not just cut short."""


def read_jsonl(path: Path) -> list[Record]:
    """Every record of ``path`` in file order ([] if it does not exist), without a torn last line."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":  # the newline ending the last record
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        record, why = _parse(line)
        if record is not None:
            records.append(record)
        elif number == len(lines):
            log.warning("%s: dropped its last line (%d bytes, %s): a write cut short", path, len(line), why)
        else:
            raise JsonlError(f"{path}: line {number} is {why}; only the last line may be torn")
    return records


def append_jsonl(path: Path, *records: Record) -> None:
    """Append ``records``, one line each, in one write; flushed and fsynced before returning.

    A torn last line left by an earlier run is cut off first (read_jsonl would drop it anyway).
    """
    data = b"".join(_encode(r) for r in records)
    with path.open("a+b") as handle:  # readable too: the tail is checked first
        _cut_torn_tail(handle, path)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: Path, records: list[Record]) -> None:
    """Replace ``path`` with exactly ``records``, atomically; a file that already holds them is left alone."""
    data = b"".join(_encode(r) for r in records)
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def find_record(records: list[Record], **key: Any) -> Record | None:
    """The first record whose fields equal ``key`` (e.g. ``row="oracle", task_id="t1"``), or None."""
    return next((r for r in records if all(r.get(k) == v for k, v in key.items())), None)


class JsonlLog:
    """A resumable JSON-lines file held in memory: its records, looked up by key fields, and appended to."""

    def __init__(self, path: Path):
        self.path = path
        self.records = read_jsonl(path)

    def find(self, **key: Any) -> Record | None:
        """The first record with these key values, if there is one."""
        return find_record(self.records, **key)

    def append(self, record: Record) -> None:
        """Write ``record`` to the file (flushed and fsynced), then keep it in memory."""
        append_jsonl(self.path, record)
        self.records.append(record)


def _encode(record: Record) -> bytes:
    # json.dumps defaults (ASCII, no key sorting): the layout the benches' existing files already have.
    return (json.dumps(record) + "\n").encode("utf-8")


def _parse(line: bytes) -> tuple[Record | None, str]:
    """(the record, "") or (None, what is wrong with the line)."""
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, ""


def _cut_torn_tail(handle: BinaryIO, path: Path) -> None:
    """Make a read-and-append handle's file end where its last complete record ends."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    handle.seek(0)
    data = handle.read()
    start = data.rfind(b"\n") + 1
    record, _ = _parse(data[start:])
    if record is not None:  # complete but for its newline: keep it
        handle.write(b"\n")
        return
    log.warning("%s: cut off a torn last line (%d bytes) before appending", path, size - start)
    handle.truncate(start)
