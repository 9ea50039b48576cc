"""A content-addressed artifact store for adapters: large payloads travel by hash and location.

Layout: ``ROOT/adapters/<sha256>/`` holds ``adapter_model.safetensors`` and
``adapter_config.json`` (what the id is a hash of) plus ``provenance.json``
(how it was made; not part of the id, so recording more there never changes
an adapter id). An adapter appears in the store complete or not at all: it is
written into a temporary folder beside its final place, fsynced, and renamed.
That folder (``.incoming-*``) is removed when the write fails, and, should its
writer die, by the next opening of the store: a writer holds a ``flock`` on its
folder, so an unlocked one that is not brand new is abandoned.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from protocol.canonical import canonical_json, sha256_hex
from protocol.messages import AdapterRef, SelfEdit

HASHED_FILES = ("adapter_config.json", "adapter_model.safetensors")
PROVENANCE_FILE = "provenance.json"
TRAINED_FROM = "trained_from"
"""Provenance key: the :func:`self_edit_sha256` of every self-edit the adapter was trained from, as the student
recorded them. The auditor judges an adapter only with one of these. Usually one; several when different
self-edits gave the same training data, hence the same weights and id."""


TRAINED_ON_CONTEXT = "trained_on_context"
"""Provenance key: the content id of the passage the adapter was trained on, computed by the student from the text
it trained on (``library.datasets.context_id_for``). The auditor judges an adapter only for that context: its τ is
keyed by the same content id, so a passage swapped in under another context's id is caught."""

TRAINED_ON_STACK = "trained_on_stack"
"""Provenance key: the adapter ids (bottom first) the adapter was trained on top of, frozen; empty: the base model.
The auditor judges an adapter only against that stack, and only while that stack is the one served."""

REHEARSED = "rehearsed"
"""Provenance key: the :func:`self_edit_sha256` of every earlier self-edit whose lines were mixed into the training
(rehearsal). The auditor judges an adapter only if it accepted each of them before."""


def self_edit_sha256(self_edit: SelfEdit) -> str:
    """Hash of a self-edit over its canonical JSON: the student records it in provenance, the auditor signs it.

    Non-ASCII is escaped here, as in every verdict signed so far (see :func:`canonical_json`).
    """
    return sha256_hex(canonical_json(self_edit.model_dump(mode="json"), ascii_only=True))


def pairs_sha256(pairs: list[tuple[str, str]]) -> str:
    """sha256 of (prompt, completion) pairs as canonical JSON: names the exact data a teacher version was trained on.

    The teacher computes it for what it trained on; the auditor recomputes it from the self-edits its own
    verdicts hold, so the two must agree on this one definition.
    """
    return sha256_hex(canonical_json([list(pair) for pair in pairs]))


class ArtifactError(Exception):
    """An adapter that is missing, incomplete or does not match its id."""


def content_id(folder: Path) -> str:
    """sha256 over the hashed files' names and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder} has no {name}")
        digest.update(name.encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


INCOMING_PREFIX = ".incoming-"
ABANDONED_AFTER_S = 60.0
"""An unlocked scratch folder younger than this may be one whose writer has made it and not yet locked it."""


def abandoned(folder: Path, grace_s: float = ABANDONED_AFTER_S) -> bool:
    """Whether no process holds ``folder``'s flock and it is older than ``grace_s``: its writer is gone."""
    try:
        if time.time() - folder.stat().st_mtime < grace_s:
            return False
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def lock_folder(folder: Path) -> int:
    """Hold an exclusive flock on ``folder`` until the returned fd is closed (or the process dies)."""
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class ArtifactStore:
    """Adapters on a local (or shared network) file system, keyed by content hash."""

    def __init__(self, root: Path | str, writer: bool = True):
        """Open the store at ``root``; a writer (the student) creates it and sweeps what dead writers left.

        A reader (the auditor, ``seal serve``) changes nothing: it may run on a read-only mount, and may
        start before the student has made the store, whose adapters it then simply does not find yet.
        """
        self.root = Path(root)
        self.adapters = self.root / "adapters"
        if writer:
            self.adapters.mkdir(parents=True, exist_ok=True)
            self._remove_abandoned_incoming()

    def _remove_abandoned_incoming(self) -> None:
        """Half-written adapters of writers that died (16 MB or more each); in-progress ones are locked."""
        for folder in self.adapters.glob(INCOMING_PREFIX + "*"):
            if abandoned(folder):
                shutil.rmtree(folder, ignore_errors=True)

    def put_adapter(self, source: Path, base_model: str, provenance: dict[str, Any]) -> AdapterRef:
        """Copy a saved peft adapter folder into the store, atomically; returns its reference.

        An adapter already stored keeps its provenance, except that the self-edits in ``provenance[TRAINED_FROM]``
        are added to the ones it records.
        """
        adapter_id = content_id(source)
        final = self.adapters / adapter_id
        if not final.exists():
            self._write_atomically(source, final, {"base_model": base_model, **provenance})
        self._add_trained_from(final, provenance.get(TRAINED_FROM, []))  # no-op when just written here
        return AdapterRef(adapter_id=adapter_id, uri=str(final), base_model=base_model)

    def path(self, adapter_id: str) -> Path:
        """The folder of a stored adapter, checked to be complete and unaltered."""
        folder = self.adapters / adapter_id
        if not folder.is_dir():
            raise ArtifactError(f"adapter {adapter_id[:12]} is not in the store at {self.root}")
        if content_id(folder) != adapter_id:
            raise ArtifactError(f"adapter {adapter_id[:12]} in {self.root} does not match its hash")
        return folder

    def provenance(self, adapter_id: str) -> dict[str, Any]:
        """How a stored adapter was made (``provenance.json``), read from a folder checked like :meth:`path`."""
        path = self.path(adapter_id) / PROVENANCE_FILE
        try:
            provenance = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"adapter {adapter_id[:12]} has no readable provenance in {self.root}: {exc}") from None
        if not isinstance(provenance, dict):
            raise ArtifactError(f"adapter {adapter_id[:12]} has no readable provenance in {self.root}: not an object")
        return provenance

    def _add_trained_from(self, folder: Path, hashes: list[str]) -> None:
        """Record more self-edits in a stored adapter's provenance, replacing the file atomically."""
        path = folder / PROVENANCE_FILE
        recorded = json.loads(path.read_text())
        known = recorded.get(TRAINED_FROM, [])
        added = [h for h in dict.fromkeys(hashes) if h not in known]
        if not added:
            return
        tmp = folder / f".{PROVENANCE_FILE}.incoming"
        tmp.write_text(json.dumps({**recorded, TRAINED_FROM: known + added}, indent=1, sort_keys=True))
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(folder)

    def _write_atomically(self, source: Path, final: Path, provenance: dict[str, Any]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=self.adapters))
        lock = lock_folder(tmp)
        try:
            for name in HASHED_FILES:
                shutil.copyfile(source / name, tmp / name)
            (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1, sort_keys=True))
            for child in tmp.iterdir():
                _fsync(child)
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.is_dir():  # another writer stored the same content first
                return
            raise ArtifactError(f"could not store adapter in {self.root}: {exc}") from exc
        except BaseException:  # interrupted, or any other failure: the half-written folder must not stay
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(lock)
        _fsync(self.adapters)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
