"""ReST^EM: rounds of sampling self-edits, keeping the rewarded ones, and training the teacher on them.

Round r: the E-step is an adaptation pass (:func:`teacher.loop.run_pass`) with teacher
version v_r: K self-edits per context, each trained by the student (R times, with
different seeds, when ``repeats`` > 1) and judged by the auditor. The filter keeps, per
context, the self-edit with the best mean reward, if that reward is above the
threshold and above 0 (a self-edit that did not beat the unadapted student is never
kept, nor one that any verdict vetoed). The M-step makes v_{r+1}: a LoRA fine-tune of
the teacher's base model on the kept (prompt → self-edit) pairs for a local teacher,
or an exemplar bank for an API teacher. The auditor records each version in its
ledger after checking every claimed reward against its own verdicts.

Everything lands in the run folder (``round-<r>/results.jsonl``, ``teacher/``), and a
rerun resumes: finished contexts and versions already made are not redone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.artifacts import ArtifactStore, pairs_sha256
from protocol.messages import (
    Context,
    DescribeStudent,
    RecordTeacherVersion,
    SelfEdit,
    StudentInfo,
    TeacherVersionRecorded,
    TrainingExample,
    TrainSettings,
    Verdict,
)
from teacher.exemplars import Exemplar, ExemplarBank
from teacher.loop import Link, Outcome, run_pass
from teacher.proposer import propose
from teacher.sft import SFTSettings, train_teacher_adapter

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

    def example(self) -> TrainingExample:
        return TrainingExample(
            context_id=self.context.context_id,
            self_edit_id=self.self_edit.self_edit_id,
            reward=self.reward,
            verdict_entries=self.verdict_entries,
        )


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


BASE_VERSION = TeacherVersion("v0", -1, "base", None)


def mean_rewards(outcome: Outcome) -> dict[str, tuple[float, list[Verdict]]]:
    """Per self-edit id: the mean reward over its verdicts, and the verdicts.

    Only self-edits the auditor accepted every time count: a vetoed one, or one that cost retention, must not
    teach the teacher, however large its gain.
    """
    grouped: dict[str, list[Verdict]] = {}
    for verdict in outcome.verdicts:
        grouped.setdefault(verdict.self_edit_id, []).append(verdict)
    return {
        edit_id: (sum(v.reward for v in verdicts) / len(verdicts), verdicts)
        for edit_id, verdicts in grouped.items()
        if all(v.accepted and not v.vetoes and v.ledger_entry for v in verdicts)
    }


def select_kept(outcomes: list[Outcome], min_reward: float) -> list[Kept]:
    """ReST^EM's filter: per context, the best self-edit if its mean reward is above ``min_reward`` and 0."""
    kept = []
    for outcome in outcomes:
        rewards = mean_rewards(outcome)
        edits = {e.self_edit_id: e for e in outcome.self_edits if e.self_edit_id in rewards and e.text.strip()}
        if not edits:
            continue
        best = max(edits, key=lambda edit_id: (rewards[edit_id][0], edit_id))
        reward, verdicts = rewards[best]
        if reward > max(min_reward, 0.0):
            entries = [v.ledger_entry for v in verdicts]
            kept.append(Kept(outcome.context, edits[best], reward, entries, verdicts[0].adapter_id))
    return kept


class VersionBook:
    """The teacher versions of a run, in ``run_dir/teacher/versions.json`` (rewritten atomically)."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / "teacher"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "versions.json"
        self.store = ArtifactStore(self.folder / "store")
        raw = json.loads(self.path.read_text()) if self.path.exists() else []
        self.versions = [BASE_VERSION] + [TeacherVersion(**{**v, "losses": tuple(v["losses"])}) for v in raw]

    def latest(self) -> TeacherVersion:
        return self.versions[-1]

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


def serve(backend: Any, version: TeacherVersion, book: VersionBook) -> None:
    """Make ``backend`` sample as ``version`` (LoRA versions; exemplar banks are applied by the prompt)."""
    if version.kind == "lora":
        backend.serve_version(book.artifact_path(version))
    elif hasattr(backend, "serve_base"):
        backend.serve_base()


def train_lora_version(
    backend: Any,
    kept: list[Kept],
    round_index: int,
    book: VersionBook,
    settings: SFTSettings,
    device: str = "auto",
    dtype: str = "auto",
) -> tuple[TeacherVersion, RecordTeacherVersion]:
    """The M-step for a local teacher: a LoRA on its base model, stored by content hash."""
    model, tokenizer, base_model = sft_model_of(backend, device, dtype)
    pairs = [(k.self_edit.prompt, k.self_edit.text) for k in kept]
    result = train_teacher_adapter(model, tokenizer, pairs, base_model, settings)
    try:
        ref = book.store.put_adapter(result.folder, base_model, {"round": round_index, "pairs": pairs})
    finally:
        shutil.rmtree(result.folder, ignore_errors=True)
    version = TeacherVersion(
        f"v{round_index + 1}", round_index, "lora", ref.uri, ref.adapter_id, None, len(kept), tuple(result.losses)
    )
    return version, _record_request(version, backend, kept, settings.model_dump(mode="json"))


def build_exemplar_version(
    backend: Any, kept: list[Kept], round_index: int, book: VersionBook, previous: ExemplarBank | None
) -> tuple[TeacherVersion, RecordTeacherVersion]:
    """The M-step for an API teacher: the kept self-edits join its exemplar bank."""
    bank = (previous or ExemplarBank()).model_copy(deep=True)
    bank.insert(_exemplar_of(k) for k in kept)
    path = bank.save(book.folder / "exemplars")
    version = TeacherVersion(
        f"v{round_index + 1}", round_index, "exemplars", str(path), bank.content_id, None, len(kept)
    )
    return version, _record_request(version, backend, kept, bank_settings(bank))


def bank_settings(bank: ExemplarBank) -> dict[str, Any]:
    """How an exemplar-bank version was made, for its ledger record."""
    return {"capacity": bank.capacity, "shown": bank.shown}


def _record_request(
    version: TeacherVersion, backend: Any, kept: list[Kept], settings: dict[str, Any]
) -> RecordTeacherVersion:
    """What the auditor is asked to record for ``version``: its artifact, its exact data and the rewards behind it."""
    assert version.artifact_sha256 is not None
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


def record(auditor: Link, version: TeacherVersion, request: RecordTeacherVersion, timeout_s: float) -> TeacherVersion:
    """Have the auditor check and record the version; returns it with its ledger entry."""
    reply = auditor.call(request, timeout_s)
    assert isinstance(reply, TeacherVersionRecorded)
    return TeacherVersion(**{**asdict(version), "ledger_entry": reply.ledger_entry})


def sft_model_of(backend: Any, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any, str]:
    """The transformers model, tokenizer and model spec the M-step fine-tunes, for a local teacher backend.

    ``device`` and ``dtype`` place the copy loaded for a vLLM teacher (the in-process teacher trains its own).
    """
    if hasattr(backend, "base_model"):  # the in-process transformers teacher: train its own weights' base
        backend.serve_base()
        return backend.base_model, backend.tokenizer, backend.model_id
    from library.models import load_model  # a vLLM teacher: its weights live in the engine, so load a copy

    spec = backend.model_id.removeprefix("vllm:")
    model, tokenizer = load_model(spec, device, dtype)
    return model, tokenizer, spec


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


def run_restem(
    backend: Any,
    contexts: list[Context],
    student: Link,
    auditor: Link,
    config: TeacherConfig,
) -> list[RoundSummary]:
    """``config.restem.rounds`` rounds of E-step, filter and M-step; resumes from ``config.run_dir``."""
    book = VersionBook(config.run_dir)
    timeouts = (config.train_timeout_s, config.judge_timeout_s)
    settings = repeat_settings(student, config.restem.repeats, config.train_timeout_s)
    summaries = []
    for r in range(config.restem.rounds):
        version = book.made_in(r - 1)  # v0 for round 0; the previous round's M-step made the others
        assert version is not None, "rounds run in order, so the previous round's version exists"
        serve(backend, version, book)
        bank = book.bank(version)

        def propose_for(context: Context, version: TeacherVersion = version, bank: ExemplarBank | None = bank):
            return propose(backend, [context], config.k, config.format, config.sampling, version.version, bank)[0]

        log.info("round %d: E-step with teacher %s", r, version.version)
        outcomes = run_pass(contexts, propose_for, student, auditor, config.run_dir / f"round-{r}", timeouts, settings)
        kept = select_kept(outcomes, config.restem.min_reward)
        made = book.made_in(r)
        if made is None:
            made = _m_step(backend, kept, r, book, version, auditor, config)
        elif made.ledger_entry is None and made.kind != "base":  # made, but the run stopped before the record
            made = _finish_record(backend, made, kept, book, auditor, config)
        summaries.append(RoundSummary(r, version.version, outcomes, kept, made))
    return summaries


@dataclass(frozen=True)
class RoundSummary:
    """What one round did: the teacher that sampled, the outcomes, what was kept, the version it made."""

    round: int
    sampled_by: str
    outcomes: list[Outcome]
    kept: list[Kept]
    made: TeacherVersion


def repeat_settings(student: Link, repeats: int, timeout_s: float) -> list[TrainSettings | None] | None:
    """With ``repeats`` > 1: the student's default settings once per seed; otherwise None (train once)."""
    if repeats == 1:
        return None
    info = student.call(DescribeStudent(), timeout_s)
    assert isinstance(info, StudentInfo)
    base = info.default_settings
    return [base.model_copy(update={"seed": base.seed + i}) for i in range(repeats)]


def _finish_record(
    backend: Any, made: TeacherVersion, kept: list[Kept], book: VersionBook, auditor: Link, config: TeacherConfig
) -> TeacherVersion:
    """Have the auditor record a version booked by an interrupted run (the same request it would have sent)."""
    bank = book.bank(made)
    settings = config.restem.sft.model_dump(mode="json") if bank is None else bank_settings(bank)
    version = record(auditor, made, _record_request(made, backend, kept, settings), config.judge_timeout_s)
    book.replace(version)
    return version


def _m_step(
    backend: Any,
    kept: list[Kept],
    round_index: int,
    book: VersionBook,
    previous: TeacherVersion,
    auditor: Link,
    config: TeacherConfig,
) -> TeacherVersion:
    """Make, record and book the next version; with nothing kept, the teacher stays as it was."""
    if not kept:
        log.warning("round %d kept no self-edit: the teacher stays %s", round_index, previous.version)
        carried = TeacherVersion(**{**asdict(previous), "version": f"v{round_index + 1}", "round": round_index})
        book.add(carried)
        return carried
    if hasattr(backend, "serve_version"):
        version, request = train_lora_version(
            backend, kept, round_index, book, config.restem.sft, config.device, config.dtype
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
