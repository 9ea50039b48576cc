"""ReST^EM's M-step: the kept self-edits become the next teacher version, recorded by the auditor.

The same M-step serves both domains: a kept self-edit is a (prompt, completion) pair and the example the
auditor checks (:class:`Kept`), and the recorder is whatever auditor holds the verdicts (:class:`VersionRecorder`).
A local teacher (``backend.version_kind == "lora"``) gets a fresh LoRA on its base model, fine-tuned on
the kept (prompt -> self-edit) pairs; an API teacher's kept self-edits join its exemplar bank. Either
way the auditor is asked to record the version with the exact data it was made from and the verdicts
behind each example, and checks every claimed reward against its own ledger before it does.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from library.model_specs import DTypeName
from protocol.artifacts import pairs_sha256
from protocol.messages import Context, RecordTeacherVersion, SelfEdit, TeacherVersionRecorded, VersionExample
from teacher.backends import LoRATeacher, TeacherBackend
from teacher.exemplars import Exemplar, ExemplarBank
from teacher.sft import SFTConfig, train_teacher_adapter
from teacher.versions import TeacherVersion, VersionBook, version_label

if TYPE_CHECKING:
    from teacher.config import TeacherConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    """A self-edit kept to teach the teacher, in either domain.

    ``prompt`` and ``completion`` are the M-step's training pair (the completion as the teacher is fine-tuned
    to write it); ``example`` is what the auditor checks against its ledger (``context_id``: the context or
    the ARC task). ``context`` and ``self_edit`` are the knowledge domain's, which an API teacher's exemplar
    bank shows; the few-shot domain has neither.
    """

    prompt: str
    completion: str
    example: VersionExample
    adapter_id: str  # the first of its candidates, as the exemplar bank cites one
    context: Context | None = None
    self_edit: SelfEdit | None = None

    @classmethod
    def of_self_edit(
        cls, context: Context, self_edit: SelfEdit, reward: float, verdict_entries: list[str], adapter_id: str
    ) -> Kept:
        """A knowledge self-edit kept with its mean reward and the ledger entries of its verdicts."""
        example = VersionExample(
            context_id=context.context_id,
            self_edit_id=self_edit.self_edit_id,
            reward=reward,
            verdict_entries=verdict_entries,
        )
        return cls(self_edit.prompt, self_edit.text, example, adapter_id, context, self_edit)

    @property
    def reward(self) -> float:
        """The mean reward over its verdicts."""
        return self.example.reward

    @property
    def verdict_entries(self) -> list[str]:
        """The ledger entries of every verdict on it."""
        return self.example.verdict_entries

    def pair(self) -> tuple[str, str]:
        """The (prompt, completion) pair the teacher is fine-tuned on."""
        return (self.prompt, self.completion)


class VersionRecorder(Protocol):
    """Who checks and records a teacher version: the auditor's typed client, or an in-process auditor."""

    def record_teacher_version(self, request: RecordTeacherVersion, timeout_s: float) -> TeacherVersionRecorded: ...


@dataclass(frozen=True)
class MStepConfig:
    """How the M-step trains a local teacher, and how long it waits for the auditor's record."""

    sft: SFTConfig
    device: str = "auto"
    dtype: DTypeName = "auto"
    record_timeout_s: float = 1800.0

    @classmethod
    def of(cls, config: TeacherConfig) -> MStepConfig:
        """The knowledge teacher's settings (``--restem.sft.*``, its device, the judge timeout)."""
        return cls(config.restem.sft, config.device, config.dtype, config.judge_timeout_s)


def train_lora_version(
    backend: LoRATeacher,
    kept: list[Kept],
    round_index: int,
    book: VersionBook,
    settings: SFTConfig,
    device: str = "auto",
    dtype: DTypeName = "auto",
) -> tuple[TeacherVersion, RecordTeacherVersion]:
    """The M-step for a local teacher: a LoRA on its base model, stored by content hash."""
    model, tokenizer, base_model = backend.training_copy(device, dtype)
    pairs = [k.pair() for k in kept]
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
        data_sha256=pairs_sha256([k.pair() for k in kept]),
        examples=[k.example for k in kept],
        settings=settings,
        losses=list(version.losses),
    )


def record(
    recorder: VersionRecorder, version: TeacherVersion, request: RecordTeacherVersion, timeout_s: float
) -> TeacherVersion:
    """Have the auditor check and record the version; returns it with its ledger entry."""
    reply = recorder.record_teacher_version(request, timeout_s)
    return TeacherVersion(**{**asdict(version), "ledger_entry": reply.ledger_entry})


def _exemplar_of(kept: Kept) -> Exemplar:
    if kept.context is None or kept.self_edit is None:
        raise ValueError("an exemplar bank is made of knowledge self-edits: this kept example has no context")
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
    recorder: VersionRecorder,
    config: MStepConfig,
) -> TeacherVersion:
    """Have the auditor record a version booked by an interrupted run (the same request it would have sent)."""
    bank = book.bank(made)
    settings = config.sft.model_dump(mode="json") if bank is None else bank_settings(bank)
    version = record(recorder, made, record_request(made, backend, kept, settings), config.record_timeout_s)
    book.replace(version)
    return version


def make_version(
    backend: TeacherBackend,
    kept: list[Kept],
    round_index: int,
    book: VersionBook,
    previous: TeacherVersion,
    recorder: VersionRecorder,
    config: MStepConfig,
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
            lora_teacher, kept, round_index, book, config.sft, config.device, config.dtype
        )
    else:
        version, request = build_exemplar_version(backend, kept, round_index, book, book.bank(previous))
    book.add(version)  # booked before the auditor records it: a crash in between is finished on resume
    version = record(recorder, version, request, config.record_timeout_s)
    book.replace(version)
    log.info(
        "round %d: teacher %s from %d kept self-edits (ledger %s)",
        round_index,
        version.version,
        len(kept),
        version.ledger_entry[:12] if version.ledger_entry else "-",
    )
    return version
