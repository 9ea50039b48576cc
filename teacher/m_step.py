"""ReST^EM's M-step: the kept self-edits become the next teacher version, recorded by the auditor.

A local teacher (``backend.version_kind == "lora"``) gets a fresh LoRA on its base model, fine-tuned on
the kept (prompt -> self-edit) pairs; an API teacher's kept self-edits join its exemplar bank. Either
way the auditor is asked to record the version with the exact data it was made from and the verdicts
behind each example, and checks every claimed reward against its own ledger before it does.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from protocol.artifacts import pairs_sha256
from protocol.clients import AuditorClient
from protocol.messages import Context, RecordTeacherVersion, SelfEdit, VersionExample
from teacher.backends import LoRATeacher, TeacherBackend
from teacher.exemplars import Exemplar, ExemplarBank
from teacher.sft import SFTConfig, train_teacher_adapter
from teacher.versions import TeacherVersion, VersionBook, version_label

if TYPE_CHECKING:
    from teacher.config import TeacherConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """A context's best self-edit in a round, with its mean reward and the verdicts behind it."""

    context: Context
    self_edit: SelfEdit
    reward: float
    verdict_entries: list[str]
    adapter_id: str  # the first of its candidates, as the exemplar bank cites one

    def example(self) -> VersionExample:
        return VersionExample(
            context_id=self.context.context_id,
            self_edit_id=self.self_edit.self_edit_id,
            reward=self.reward,
            verdict_entries=self.verdict_entries,
        )


def train_lora_version(
    backend: LoRATeacher,
    kept: list[Kept],
    round_index: int,
    book: VersionBook,
    settings: SFTConfig,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[TeacherVersion, RecordTeacherVersion]:
    """The M-step for a local teacher: a LoRA on its base model, stored by content hash."""
    model, tokenizer, base_model = backend.training_copy(device, dtype)
    pairs = [(k.self_edit.prompt, k.self_edit.text) for k in kept]
    result = train_teacher_adapter(model, tokenizer, pairs, base_model, settings)
    try:
        ref = book.store.put_adapter(result.folder, base_model, {"round": round_index, "pairs": pairs})
    finally:
        shutil.rmtree(result.folder, ignore_errors=True)
    label = version_label(round_index)
    version = TeacherVersion(label, round_index, "lora", ref.uri, ref.adapter_id, None, len(kept), tuple(result.losses))
    return version, record_request(version, backend, kept, settings.model_dump(mode="json"))


def build_exemplar_version(
    backend: TeacherBackend, kept: list[Kept], round_index: int, book: VersionBook, previous: ExemplarBank | None
) -> tuple[TeacherVersion, RecordTeacherVersion]:
    """The M-step for an API teacher: the kept self-edits join its exemplar bank."""
    bank = (previous or ExemplarBank()).model_copy(deep=True)
    bank.insert(_exemplar_of(k) for k in kept)
    path = bank.save(book.folder / "exemplars")
    label = version_label(round_index)
    version = TeacherVersion(label, round_index, "exemplars", str(path), bank.content_id, None, len(kept))
    return version, record_request(version, backend, kept, bank_settings(bank))


def bank_settings(bank: ExemplarBank) -> dict[str, Any]:
    """How an exemplar-bank version was made, for its ledger record."""
    return {"capacity": bank.capacity, "shown": bank.shown}


def record_request(
    version: TeacherVersion, backend: TeacherBackend, kept: list[Kept], settings: dict[str, Any]
) -> RecordTeacherVersion:
    """What the auditor is asked to record for ``version``: its artifact, its exact data and the rewards behind it."""
    if version.artifact_sha256 is None:
        raise ValueError(f"teacher version {version.version} has no artifact to record")
    return RecordTeacherVersion(
        version=version.version,
        round=version.round,
        kind=version.kind,
        teacher_model=backend.model_id,
        artifact_sha256=version.artifact_sha256,
        data_sha256=pairs_sha256([(k.self_edit.prompt, k.self_edit.text) for k in kept]),
        examples=[k.example() for k in kept],
        settings=settings,
        losses=list(version.losses),
    )


def record(
    auditor: AuditorClient, version: TeacherVersion, request: RecordTeacherVersion, timeout_s: float
) -> TeacherVersion:
    """Have the auditor check and record the version; returns it with its ledger entry."""
    reply = auditor.record_teacher_version(request, timeout_s)
    return TeacherVersion(**{**asdict(version), "ledger_entry": reply.ledger_entry})


def _exemplar_of(kept: Kept) -> Exemplar:
    return Exemplar(
        context_id=kept.context.context_id,
        title=kept.context.title,
        passage=kept.context.text,
        format=kept.self_edit.format,
        text=kept.self_edit.text.strip(),
        reward=kept.reward,
        self_edit_id=kept.self_edit.self_edit_id,
        adapter_id=kept.adapter_id,
        teacher_version=kept.self_edit.teacher_version,
    )


def finish_record(
    backend: TeacherBackend,
    made: TeacherVersion,
    kept: list[Kept],
    book: VersionBook,
    auditor: AuditorClient,
    config: TeacherConfig,
) -> TeacherVersion:
    """Have the auditor record a version booked by an interrupted run (the same request it would have sent)."""
    bank = book.bank(made)
    settings = config.restem.sft.model_dump(mode="json") if bank is None else bank_settings(bank)
    version = record(auditor, made, record_request(made, backend, kept, settings), config.judge_timeout_s)
    book.replace(version)
    return version


def make_version(
    backend: TeacherBackend,
    kept: list[Kept],
    round_index: int,
    book: VersionBook,
    previous: TeacherVersion,
    auditor: AuditorClient,
    config: TeacherConfig,
) -> TeacherVersion:
    """Make, record and book the next version; with nothing kept, the teacher stays as it was."""
    if not kept:
        log.warning("round %d kept no self-edit: the teacher stays %s", round_index, previous.version)
        carried = TeacherVersion(**{**asdict(previous), "version": version_label(round_index), "round": round_index})
        book.add(carried)
        return carried
    if backend.version_kind == "lora":
        lora_teacher = cast(LoRATeacher, backend)
        version, request = train_lora_version(
            lora_teacher, kept, round_index, book, config.restem.sft, config.device, config.dtype
        )
    else:
        version, request = build_exemplar_version(backend, kept, round_index, book, book.bank(previous))
    book.add(version)  # booked before the auditor records it: a crash in between is finished on resume
    version = record(auditor, version, request, config.judge_timeout_s)
    book.replace(version)
    log.info(
        "round %d: teacher %s from %d kept self-edits (ledger %s)",
        round_index,
        version.version,
        len(kept),
        version.ledger_entry[:12] if version.ledger_entry else "-",
    )
    return version
