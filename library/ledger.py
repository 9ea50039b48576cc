"""An append-only, hash-chained JSONL ledger of the auditor's decisions, and its offline verifier.

Each line of ``<name>.jsonl`` is one entry::

    {"hash": ..., "kind": "verdict", "prev": ..., "record": {...}, "seq": 1, "ts": "2025-...Z"}

``seq`` counts from 1 (so entry *n* sits on line *n*), ``prev`` is the previous
entry's ``hash`` (64 zeros for the first), and ``hash`` is the sha256 of the
canonical JSON of the entry without ``hash``. Lines are written in that same
canonical form. A head file beside the ledger (``<name>.head.json``) holds the
last seq, last hash and count, so that a truncated tail is detectable.

A ledger has one writer: a :class:`Ledger` holds an exclusive ``fcntl.flock`` on
the lock file beside it (``<name>.lock``) for its life, and a second one, in
this process or another, is refused at start. Readers (:func:`read_entries`,
:func:`verify_ledger`) take no lock and write nothing.

An append writes the whole line with one ``os.write`` on an ``O_APPEND`` fd and
fsyncs it, then replaces the head file atomically. A crash can therefore leave
either a torn last line (removed by :func:`repair_ledger`, ``seal ledger
repair``, or on open with ``repair=True``) or a head one entry behind (brought
forward on open). An append that raises :class:`LedgerError` has recorded nothing.

Check a ledger from the files alone::

    >>> verify_ledger(Path("runs/ledger.jsonl"))
    VerifyReport(ok=True, entries=12, problems=[], warnings=[])
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from protocol import canonical
from protocol.canonical import sha256_hex

log = logging.getLogger(__name__)

GENESIS = "0" * 64
_ENTRY_FIELDS: dict[str, type] = {
    "seq": int,
    "ts": str,
    "kind": str,
    "record": dict,
    "prev": str,
    "hash": str,
}
_HEAD_FIELDS = ("count", "last_seq", "last_hash")


class LedgerError(Exception):
    """The ledger's files are damaged or inconsistent, or an append could not be made durable."""


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_ledger`.

    ``entries`` counts the well-formed entry lines. Each problem starts with
    ``line N:``; ``warnings`` are states a crash can legitimately leave and that
    opening a :class:`Ledger` resolves (a head file one entry behind).
    """

    ok: bool
    entries: int
    problems: list[str]
    warnings: list[str] = field(default_factory=list)


class Ledger:
    """Appends hash-chained entries to ``path`` (a ``.jsonl`` file); safe for threads of one process.

    Opening takes the writer lock (:class:`LedgerError` if another Ledger holds
    it) and checks the tail: a torn last line raises :class:`LedgerError` unless
    ``repair=True``, which truncates it; a head file exactly one entry behind is
    brought forward. The lock is held until :meth:`close` (or the end of a
    ``with`` block, or the object's collection).
    """

    def __init__(self, path: Path, *, repair: bool = False):
        self.path = Path(path)
        self.head_path = head_path_for(self.path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: WriterLock | None = WriterLock(self.path)
        try:
            head = _read_head(self.head_path)
            self._create_if_missing(head)
            last = self._load_tail(repair)
            self._size = os.path.getsize(self.path)
            self._count = last["seq"] if last else 0
            self._last_hash = last["hash"] if last else GENESIS
            self._reconcile_head(head, last, repair)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the writer lock; the object can no longer append. Safe to call twice."""
        writer, self._writer = getattr(self, "_writer", None), None
        if writer is not None:
            writer.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A dropped Ledger must not keep its ledger locked, as a dropped file object does not stay open.
        self.close()

    @property
    def count(self) -> int:
        """Number of entries in the ledger."""
        return self._count

    @property
    def last_hash(self) -> str:
        """Hash of the last entry (64 zeros for an empty ledger)."""
        return self._last_hash

    def append(self, kind: str, record: dict[str, Any]) -> str:
        """Durably append one entry and return its hash.

        ``record`` must be a dict of JSON values (str keys, finite floats);
        anything else raises ``TypeError``/``ValueError`` before any write.
        Raises :class:`LedgerError` when the entry could not be written (disk
        full, I/O error); the ledger is then as it was before the call.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty str, got {kind!r}")
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        check_json_value(record, "record")
        with self._lock:
            if self._writer is None:
                raise LedgerError(f"{self.path}: this Ledger is closed; nothing recorded")
            entry = {
                "seq": self._count + 1,
                "ts": _now(),
                "kind": kind,
                "record": record,
                "prev": self._last_hash,
            }
            entry["hash"] = entry_hash(entry)
            size_before = self._size
            line = canonical_json(entry) + b"\n"
            self._write_line(line, size_before)
            try:
                _write_head(self.head_path, entry["seq"], entry["hash"])
            except OSError as exc:
                # All or nothing: without the head the entry would look like tampering or a crash.
                _truncate_path(self.path, size_before, f"could not update {self.head_path.name}: {exc}")
                raise LedgerError(
                    f"{self.head_path}: could not update the head file ({exc}); nothing recorded"
                ) from exc
            self._count, self._last_hash, self._size = entry["seq"], entry["hash"], size_before + len(line)
            return entry["hash"]

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, in order, as parsed dicts (not verified: use :func:`verify_ledger`)."""
        with self._lock:
            return read_entries(self.path)

    def find(self, **match: Any) -> list[dict[str, Any]]:
        """Entries whose record has every given key with the given value, e.g. ``find(adapter_id=h)``."""
        return [
            e
            for e in self.entries()
            if all(key in e["record"] and e["record"][key] == value for key, value in match.items())
        ]

    # ------------------------------------------------------------------ opening

    def _create_if_missing(self, head: dict[str, Any] | None) -> None:
        if self.path.exists():
            return
        if head is not None and head["count"] != 0:
            raise LedgerError(f"{self.path} is missing but {self.head_path.name} records {head['count']} entries")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        _fsync_dir(self.path.parent)

    def _load_tail(self, repair: bool) -> dict[str, Any] | None:
        """The last entry (None if empty), after truncating a torn last line when ``repair``."""
        data = self.path.read_bytes()
        start, torn = _last_line(data)
        if torn is not None:
            lineno = data.count(b"\n", 0, start) + 1
            if not repair:
                raise LedgerError(
                    f"{self.path}: line {lineno} is torn ({torn}), as a crash mid-write leaves it; "
                    f"'seal ledger repair --ledger {self.path}' removes it (or open with repair=True)"
                )
            log.warning("%s: truncating torn line %d (%d bytes: %s)", self.path, lineno, len(data) - start, torn)
            _truncate_path(self.path, start, "repairing a torn line")
            data = data[:start]
            start, torn = _last_line(data)
            if torn is not None:
                raise LedgerError(f"{self.path}: line {lineno - 1} is damaged as well ({torn})")
        if not data:
            return None
        last = parse_entry(data[start:-1])
        if entry_hash(last) != last["hash"]:
            raise LedgerError(f"{self.path}: the last entry fails its hash check; run verify_ledger")
        return last

    def _reconcile_head(self, head: dict[str, Any] | None, last: dict[str, Any] | None, repair: bool) -> None:
        if head is None:
            if self._count and not repair:
                raise LedgerError(
                    f"{self.head_path} is missing, so truncation cannot be detected; "
                    "open with repair=True to rebuild it from the ledger"
                )
            _write_head(self.head_path, self._count, self._last_hash)
        elif head["count"] == self._count and head["last_hash"] == self._last_hash:
            return
        elif last is not None and head["count"] == self._count - 1 and head["last_hash"] == last["prev"]:
            # A crash between the line's fsync and the head's replace: the entry is durable, finish the job.
            log.warning("%s: head file was one entry behind; bringing it forward", self.head_path)
            _write_head(self.head_path, self._count, self._last_hash)
        else:
            raise LedgerError(
                f"{self.head_path} records {head['count']} entries ending in {head['last_hash'][:16]}, "
                f"but {self.path.name} has {self._count} ending in {self._last_hash[:16]}; run verify_ledger"
            )

    # ------------------------------------------------------------------ writing

    def _write_line(self, line: bytes, size_before: int) -> None:
        """One os.write of the whole line, fsynced; on any failure the file is cut back to ``size_before``."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)  # no O_CREAT: a vanished ledger is an error
        except OSError as exc:
            raise LedgerError(f"{self.path}: cannot open for appending ({exc}); nothing recorded") from exc
        try:
            if os.fstat(fd).st_size != size_before:
                # Another writer (or an editor) touched the file: our seq and prev would fork the chain.
                raise LedgerError(f"{self.path} changed outside this Ledger; reopen it and run verify_ledger")
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write: {written} of {len(line)} bytes")
                os.fsync(fd)
            except OSError as exc:
                _truncate_fd(fd, size_before, self.path, str(exc))
                raise LedgerError(f"{self.path}: append failed ({exc}); nothing recorded") from exc
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- reading and repair


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry of the ledger at ``path``, in order, without taking the lock or writing anything.

    Not verified (use :func:`verify_ledger`); a torn or malformed line raises :class:`LedgerError`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the ledger ({exc})") from exc
    lines, torn = _split_lines(data)
    if torn:
        raise LedgerError(f"{path}: line {len(lines) + 1} is torn; 'seal ledger repair' removes it (or repair=True)")
    out = []
    for lineno, raw in enumerate(lines, start=1):
        try:
            out.append(parse_entry(raw))
        except ValueError as exc:
            raise LedgerError(f"{path}: line {lineno}: {exc}") from exc
    return out


def parsed_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, entry) for every complete line that parses, skipping damaged ones; read-only.

    For checks that must go on past damage, which :func:`verify_ledger` reports on its own.
    """
    try:
        lines, _ = _split_lines(Path(path).read_bytes())
    except OSError:
        return []
    out = []
    for lineno, raw in enumerate(lines, start=1):
        try:
            out.append((lineno, parse_entry(raw)))
        except ValueError:
            continue
    return out


@dataclass
class RepairReport:
    """The outcome of :func:`repair_ledger`: what was changed, or the problems it refused to touch."""

    done: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def repair_ledger(path: Path) -> RepairReport:
    """Undo what a crash mid-append leaves: remove a torn last line, bring a lagging head file forward.

    Anything else (a damaged or changed entry before the last line, a missing or
    contradicting head file) is reported in ``problems`` and nothing is changed:
    that is tampering or corruption, for a person to look at, not for a tool to
    paper over. Takes the writer lock, so it refuses while an auditor writes.
    """
    path = Path(path)
    if not path.is_file():
        return RepairReport([], [f"{path}: the ledger file is missing"])
    lock = WriterLock(path)
    try:
        return _repair(path)
    finally:
        lock.release()


def _repair(path: Path) -> RepairReport:
    data = path.read_bytes()
    start, torn = _last_line(data)
    lines, _ = _split_lines(data[:start] if torn else data)
    problems: list[str] = []
    warnings: list[str] = []
    _, last = _check_chain(lines, problems)
    _check_head(head_path_for(path), len(lines), last, problems, warnings)
    if problems:
        return RepairReport([], problems)
    done = []
    if torn is not None:
        _truncate_path(path, start, "removing a torn last line")
        done.append(f"removed line {len(lines) + 1} ({len(data) - start} bytes, {torn}): {data[start:][:80]!r}")
    if warnings and last is not None:
        _write_head(head_path_for(path), len(lines), last["hash"])
        done.append(f"brought {head_path_for(path).name} forward to {len(lines)} entries")
    return RepairReport(done, [])


# ---------------------------------------------------------------------- verification


def verify_ledger(path: Path) -> VerifyReport:
    """Check a ledger from its files alone: every hash, the seq/prev chain, a torn tail, and the head file.

    Detects a changed entry (hash mismatch), deleted, inserted or reordered
    entries (chain broken), a truncated tail (the head file records more
    entries or another last hash) and a torn last line. Anyone able to rewrite
    the whole file from some point on, head file included, is not detected:
    keep the entry hashes (``Verdict.ledger_entry``) elsewhere as anchors.
    """
    path = Path(path)
    if not path.is_file():
        return VerifyReport(ok=False, entries=0, problems=[f"{path}: the ledger file is missing"])
    lines, torn = _split_lines(path.read_bytes())
    problems: list[str] = []
    good, last = _check_chain(lines, problems)
    if torn:
        problems.append(
            f"line {len(lines) + 1}: torn last line ({len(torn)} bytes without a trailing newline, "
            "as a crash mid-write leaves it); 'seal ledger repair' removes it"
        )
    warnings: list[str] = []
    _check_head(head_path_for(path), len(lines), last, problems, warnings)
    return VerifyReport(ok=not problems, entries=good, problems=problems, warnings=warnings)


def _check_chain(lines: list[bytes], problems: list[str]) -> tuple[int, dict[str, Any] | None]:
    """Check every complete line; return how many are well-formed and the last line's entry (None if bad)."""
    expect: tuple[int, str] | None = (1, GENESIS)  # (seq, prev) the next entry must have; None: unknown
    good, entry = 0, None
    for lineno, raw in enumerate(lines, start=1):
        try:
            entry = parse_entry(raw)
        except ValueError as exc:
            problems.append(f"line {lineno}: {exc}")
            expect, entry = None, None
            continue
        good += 1
        problems.extend(f"line {lineno}: {p}" for p in _entry_problems(entry, raw, expect, lineno))
        expect = (entry["seq"] + 1, entry["hash"])
    return good, entry


def _entry_problems(entry: dict[str, Any], raw: bytes, expect: tuple[int, str] | None, lineno: int) -> list[str]:
    """What is wrong with one well-formed entry, given the (seq, prev) its predecessor implies."""
    problems = []
    if entry_hash(entry) != entry["hash"]:
        problems.append("hash mismatch: the entry was changed after it was written")
    elif canonical_json(entry) != raw:
        problems.append("not in canonical form: the line was re-serialised or edited")
    if expect is not None and entry["seq"] != expect[0]:
        problems.append(f"seq is {entry['seq']}, expected {expect[0]}: entry deleted, inserted or moved")
    if expect is not None and entry["prev"] != expect[1]:
        what = "the genesis hash" if lineno == 1 else f"the hash of line {lineno - 1}"
        problems.append(f"prev is not {what}: the chain is broken (entry deleted, inserted or moved)")
    return problems


def _check_head(head_path: Path, n: int, last: dict[str, Any] | None, problems: list[str], warnings: list[str]) -> None:
    """Compare the head file with the ``n`` complete lines; ``last`` is line n's entry if well-formed."""
    try:
        head = _read_head(head_path)
    except LedgerError as exc:
        problems.append(f"line {n}: {exc}")
        return
    if head is None:
        problems.append(f"line {n}: head file {head_path.name} is missing, so truncation cannot be checked")
        return
    count, head_hash = head["count"], head["last_hash"]
    # None: line n is malformed, which is already reported.
    actual = GENESIS if n == 0 else (last["hash"] if last else None)
    if count == n and (actual is None or head_hash == actual):
        return
    if count == n - 1 and last is not None and last["prev"] == head_hash:
        warnings.append(
            f"line {n}: written but the head file not yet updated (a crash between the two "
            "writes); opening the Ledger brings the head forward"
        )
    elif count != n and actual == head_hash:
        # Same last entry, other count: lines went missing or appeared before it.
        what = "deleted" if count > n else "inserted"
        problems.append(
            f"line {n}: the file has {n} entries ending in the head file's last entry, but the "
            f"head file records {count} (entries {what})"
        )
    elif count > n:
        problems.append(
            f"line {n + 1}: missing: the head file records {count} entries ending in "
            f"{head_hash[:16]}, the file has {n} (tail truncated)"
        )
    elif count < n:
        problems.append(
            f"line {n}: the file has {n} entries but the head file records {count} "
            "(entries inserted, or appended without the head file)"
        )
    else:
        problems.append(
            f"line {n}: hash {actual[:16]} is not the head file's last_hash {head_hash[:16]} (last entry replaced)"
        )


# ---------------------------------------------------------------------- entry format


def canonical_json(value: Any) -> bytes:
    """The bytes that are hashed and written: :func:`protocol.canonical.canonical_json` as UTF-8."""
    return canonical.canonical_json(value).encode("utf-8")


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``entry`` without its ``hash`` field."""
    return sha256_hex(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


def parse_entry(raw: bytes) -> dict[str, Any]:
    """One line (without its newline) as an entry dict; ``ValueError`` says what is wrong with it."""
    try:
        entry = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(entry, dict) or set(entry) != set(_ENTRY_FIELDS):
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"not a ledger entry (has {keys}, expected {sorted(_ENTRY_FIELDS)})")
    for name, kind in _ENTRY_FIELDS.items():
        # bool is an int subclass; a seq of `true` is malformed, not 1.
        if not isinstance(entry[name], kind) or isinstance(entry[name], bool):
            raise ValueError(f"field {name!r} is {type(entry[name]).__name__}, expected {kind.__name__}")
    return entry


def check_json_value(value: Any, where: str) -> None:
    """Raise TypeError/ValueError, naming the path, unless ``value`` survives a JSON round trip unchanged."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}: NaN and infinities are not JSON")
    elif isinstance(value, str):
        _check_str(value, where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json_value(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            # Non-str keys would come back as strings, sorted differently: the hash would not reproduce.
            if not isinstance(key, str):
                raise TypeError(f"{where} has a {type(key).__name__} key {key!r}; JSON object keys are str")
            _check_str(key, f"{where} key {key[:40]!r}")
            check_json_value(item, f"{where}[{key!r}]")
    else:
        raise TypeError(f"{where} is a {type(value).__name__}, which is not JSON-serialisable")


def _check_str(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} contains a lone surrogate, which cannot be written as UTF-8") from None


def _split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines (without newlines) and what follows the last newline (b"" unless torn)."""
    lines = data.split(b"\n")
    return lines, lines.pop()


def _last_line(data: bytes) -> tuple[int, str | None]:
    """Offset where the last line starts, and why it is torn (None if it is a complete entry)."""
    if not data:
        return 0, None
    if not data.endswith(b"\n"):
        return data.rfind(b"\n") + 1, "no trailing newline"
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    try:
        parse_entry(data[start:-1])
    except ValueError as exc:
        return start, str(exc)
    return start, None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------- files


def head_path_for(path: Path) -> Path:
    """The head file that sits beside a ledger: ``x.jsonl`` -> ``x.head.json``."""
    return Path(path).with_suffix(".head.json")


def lock_path_for(path: Path) -> Path:
    """The lock file that sits beside a ledger: ``x.jsonl`` -> ``x.lock``."""
    return Path(path).with_suffix(".lock")


class WriterLock:
    """An exclusive, non-blocking ``fcntl.flock`` on a ledger's lock file: one writer per ledger.

    The lock file holds the holder's pid, for the refusal message. The kernel
    drops the lock when its holder dies, so a crash never leaves it stale.
    """

    def __init__(self, ledger_path: Path):
        self.path = lock_path_for(ledger_path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            who = "another Ledger in this process" if holder == str(os.getpid()) else "another process"
            raise LedgerError(
                f"{ledger_path}: {who} (pid {holder}) holds {self.path.name}, so it is writing "
                "this ledger; one writer per ledger: stop that one first (reading and verifying need no lock)"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (closing the fd releases it); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_head(head_path: Path) -> dict[str, Any] | None:
    """The head file's contents, None if it does not exist; LedgerError if it is malformed."""
    try:
        head = json.loads(head_path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LedgerError(f"head file {head_path.name} is unreadable ({exc})") from exc
    if (
        not isinstance(head, dict)
        or not all(isinstance(head.get(k), int) for k in ("count", "last_seq"))
        or not isinstance(head.get("last_hash"), str)
    ):
        raise LedgerError(f"head file {head_path.name} is malformed (expected {list(_HEAD_FIELDS)})")
    return head


def _write_head(head_path: Path, count: int, last_hash: str) -> None:
    """Replace the head file atomically: write a temporary file, fsync it, rename it over the old one."""
    data = canonical_json({"count": count, "last_seq": count, "last_hash": last_hash}) + b"\n"
    tmp: Path | None = None
    try:
        # A name of its own: a fixed one would let two writers (or a leftover) clobber each other's head.
        fd, name = tempfile.mkstemp(prefix=head_path.name + ".", suffix=".tmp", dir=head_path.parent)
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0o600; readers such as 'seal ledger verify' need it
            view = memoryview(data)
            while view:  # a temporary file may take several writes; only the rename must be atomic
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, head_path)
    except OSError:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(head_path.parent)


def _truncate_fd(fd: int, size: int, path: Path, why: str) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        raise LedgerError(
            f"{path}: {why}, and cutting the file back to {size} bytes failed too ({exc}); "
            "the last line may be torn: reopen with repair=True"
        ) from exc


def _truncate_path(path: Path, size: int, why: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        _truncate_fd(fd, size, path, why)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a create or rename durable; best effort, as some platforms cannot fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
