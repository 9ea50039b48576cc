"""The teacher versions of a ReST^EM run: v0 is the untouched base, v1, v2, ... each made by one round.

A version is a LoRA adapter on the teacher's base model (a local teacher) or an exemplar bank (an API
teacher), kept by content hash in the run folder (``teacher/store/`` and ``teacher/exemplars/``) and
booked in ``teacher/versions.json``. Its label, ``v<N>``, is the one name a version has everywhere:
in self-edits, the ledger, the benches and the reports.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from protocol.artifacts import ArtifactStore
from teacher.backends import LoRATeacher, TeacherBackend
from teacher.exemplars import ExemplarBank


def version_label(round_index: int) -> str:
    """The label of the version that round ``round_index``'s M-step makes (round -1: the base, v0)."""
    return f"v{round_index + 1}"


@dataclass(frozen=True)
class TeacherVersion:
    """One teacher version as the run folder records it; v0 is the untouched base (no artifact)."""

    version: str
    round: int  # the round whose rewards made it (-1 for v0)
    kind: str  # "base", "lora" or "exemplars"
    artifact: str | None  # the adapter folder or the bank file
    artifact_sha256: str | None = None
    ledger_entry: str | None = None
    examples: int = 0
    losses: tuple[float, ...] = ()


BASE_VERSION = TeacherVersion(version_label(-1), -1, "base", None)


class VersionBook:
    """The teacher versions of a run, in ``run_dir/teacher/versions.json`` (rewritten atomically)."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "teacher"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "versions.json"
        self.store = ArtifactStore(self.folder / "store")
        raw = json.loads(self.path.read_text()) if self.path.exists() else []
        self.versions = [BASE_VERSION] + [TeacherVersion(**{**v, "losses": tuple(v["losses"])}) for v in raw]

    def made_in(self, round_index: int) -> TeacherVersion | None:
        """The version round ``round_index``'s M-step made, if it is done."""
        return next((v for v in self.versions if v.round == round_index), None)

    def artifact_path(self, version: TeacherVersion) -> Path | None:
        """Where ``version``'s artifact is in this run folder (None for the base), found by its content hash.

        Not the path recorded when it was made, so a run folder can be moved or read from another directory;
        an adapter is checked against its hash on the way.
        """
        if version.artifact_sha256 is None:
            return None
        if version.kind == "lora":
            return self.store.path(version.artifact_sha256)
        return self.folder / "exemplars" / f"{version.artifact_sha256}.json"

    def bank(self, version: TeacherVersion) -> ExemplarBank | None:
        """The exemplar bank of an API teacher's version; None for other versions."""
        path = self.artifact_path(version) if version.kind == "exemplars" else None
        return ExemplarBank.load(path) if path is not None else None

    def add(self, version: TeacherVersion) -> None:
        self.versions.append(version)
        self._write()

    def replace(self, version: TeacherVersion) -> None:
        """Update the booked version of the same name (e.g. with its ledger entry)."""
        self.versions = [version if v.version == version.version else v for v in self.versions]
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(v) for v in self.versions[1:]], indent=1))
        os.replace(tmp, self.path)


def serve(backend: TeacherBackend, version: TeacherVersion, book: VersionBook) -> None:
    """Make ``backend`` sample as ``version`` (LoRA versions; exemplar banks are applied by the prompt)."""
    if backend.version_kind != "lora":
        return  # an API teacher: its exemplar bank is applied by the prompt
    lora_teacher = cast(LoRATeacher, backend)
    path = book.artifact_path(version) if version.kind == "lora" else None
    if path is None:
        lora_teacher.serve_base()
    else:
        lora_teacher.serve_version(path)
