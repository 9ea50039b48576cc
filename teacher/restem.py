"""ReST^EM: rounds of sampling self-edits, keeping the rewarded ones, and training the teacher on them.

One driver for both domains (:func:`run_rounds`). Round r serves teacher version v_r; the E-step is
the domain's (:class:`RestemDomain`): self-edits sampled per task with v_r, each tried by the student
and judged by the auditor, every verdict in the auditor's ledger. The filter keeps what may teach
the teacher (:func:`library.teaching.teaching_problem`: accepted by every verdict, none vetoed, mean
reward above the threshold and above 0), per task the best one (knowledge) or every one (few-shot).
The M-step (:mod:`teacher.m_step`) makes v_{r+1}: a LoRA fine-tune of the teacher's base model on the
kept (prompt → self-edit) pairs for a local teacher, or an exemplar bank for an API teacher. The
auditor records each version in its ledger after checking every claimed reward against its own
verdicts, and the version is booked in ``teacher/versions.json``.

Knowledge incorporation (:class:`KnowledgeDomain`, :func:`run_restem`): the E-step is an adaptation
pass (:func:`teacher.loop.run_pass`), K self-edits per context, each trained by the student (R times,
with different seeds, when ``repeats`` > 1). Everything lands in the run folder
(``round-<r>/results.jsonl``, ``teacher/``), and a rerun resumes: finished tasks and versions already
made are not redone. The few-shot domain is :mod:`teacher.fewshot_restem`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from library.teaching import Judged, mean_reward, teaching_problem
from protocol.clients import AuditorClient, StudentClient
from protocol.messages import Context, SelfEdit, TrainConfig, VersionExample
from teacher.backends import TeacherBackend
from teacher.loop import Outcome, run_pass
from teacher.m_step import Kept, MStepConfig, VersionRecorder, finish_record, make_version
from teacher.proposer import proposer_for
from teacher.versions import TeacherVersion, VersionBook, serve

if TYPE_CHECKING:
    from teacher.config import TeacherConfig

log = logging.getLogger(__name__)

KeepPolicy = Literal["best", "all"]
"""Per task, keep the best self-edit that may teach (knowledge) or every one (few-shot)."""


@dataclass(frozen=True)
class Judgement:
    """One verdict on a sampled self-edit, as the driver reads it."""

    accepted: bool
    vetoed: bool
    reward: float
    ledger_entry: str  # "" when the auditor did not write it to its ledger
    adapter_id: str

    def judged(self) -> Judged:
        """In the teaching rule's form; a verdict not in the ledger counts as not accepted: it cannot be cited."""
        return Judged(self.accepted and bool(self.ledger_entry), self.vetoed, self.reward)


@dataclass(frozen=True)
class Sampled:
    """One self-edit sampled in an E-step: its training pair and the auditor's verdicts on it."""

    self_edit_id: str
    prompt: str
    completion: str  # what the teacher would be fine-tuned to write; empty for a failed proposal
    verdicts: list[Judgement]
    self_edit: SelfEdit | None = None  # the knowledge domain's self-edit, for exemplar banks


@dataclass(frozen=True)
class TaskSamples:
    """What an E-step did for one task (a context, or an ARC task): every sample and its verdicts."""

    task_id: str
    samples: list[Sampled]
    context: Context | None = None  # the knowledge domain's context, for exemplar banks


class RestemDomain(Protocol):
    """What the driver needs of a domain: its E-step, and which of a task's teaching samples to keep."""

    keep: KeepPolicy

    def e_step(self, round_index: int, version: TeacherVersion) -> list[TaskSamples]:
        """Sample self-edits per task with ``version`` (already served), have them tried and judged; resumable."""
        ...


def teaching_samples(task: TaskSamples, min_reward: float) -> list[Kept]:
    """A task's samples that may teach the teacher (:func:`library.teaching.teaching_problem`), best first.

    Best: the highest mean reward, ties broken by the larger self-edit id, so the choice is reproducible.
    """
    kept = []
    for sample in task.samples:
        judged = [v.judged() for v in sample.verdicts]
        if not sample.completion.strip() or teaching_problem(judged, min_reward) is not None:
            continue
        example = VersionExample(
            context_id=task.task_id,
            self_edit_id=sample.self_edit_id,
            reward=mean_reward(judged),
            verdict_entries=[v.ledger_entry for v in sample.verdicts],
        )
        adapter_id = sample.verdicts[0].adapter_id
        kept.append(Kept(sample.prompt, sample.completion, example, adapter_id, task.context, sample.self_edit))
    return sorted(kept, key=lambda k: (k.reward, k.example.self_edit_id), reverse=True)


def keep_samples(tasks: list[TaskSamples], min_reward: float, policy: KeepPolicy) -> list[Kept]:
    """ReST^EM's filter over a round: per task, the best teaching sample or all of them."""
    kept = []
    for task in tasks:
        eligible = teaching_samples(task, min_reward)
        kept += eligible[:1] if policy == "best" else eligible
    return kept


def run_rounds(
    domain: RestemDomain,
    backend: TeacherBackend,
    book: VersionBook,
    recorder: VersionRecorder,
    rounds: int,
    min_reward: float,
    m_step: MStepConfig,
) -> list[RoundSummary]:
    """``rounds`` rounds of E-step, filter, M-step, record and book; resumes from ``book``'s run folder."""
    summaries = []
    for r in range(rounds):
        version = book.made_in(r - 1)  # v0 for round 0; the previous round's M-step made the others
        if version is None:
            raise RuntimeError(f"{book.path} has no version made by round {r - 1}: rounds run in order")
        serve(backend, version, book)
        log.info("round %d: E-step with teacher %s", r, version.version)
        tasks = domain.e_step(r, version)
        kept = keep_samples(tasks, min_reward, domain.keep)
        made = book.made_in(r)
        if made is None:
            made = make_version(backend, kept, r, book, version, recorder, m_step)
        elif made.ledger_entry is None and made.kind != "base":  # made, but the run stopped before the record
            made = finish_record(backend, made, kept, book, recorder, m_step)
        summaries.append(RoundSummary(r, version.version, tasks, kept, made))
    return summaries


@dataclass(frozen=True)
class RoundSummary:
    """What one round did: the teacher that sampled, every task's samples, what was kept, the version it made."""

    round: int
    sampled_by: str
    tasks: list[TaskSamples]
    kept: list[Kept]
    made: TeacherVersion


# --------------------------------------------------------------------------- knowledge incorporation


def outcome_samples(outcome: Outcome) -> TaskSamples:
    """A context's adaptation outcome in the driver's form: its self-edits, each with its verdicts."""
    grouped: dict[str, list[Judgement]] = {}
    for v in outcome.verdicts:
        judgement = Judgement(v.accepted, bool(v.vetoes), v.reward, v.ledger_entry, v.adapter_id)
        grouped.setdefault(v.self_edit_id, []).append(judgement)
    edits = {e.self_edit_id: e for e in outcome.self_edits}.values()  # a self-edit sampled twice is one sample
    samples = [Sampled(e.self_edit_id, e.prompt, e.text, grouped.get(e.self_edit_id, []), e) for e in edits]
    return TaskSamples(outcome.context.context_id, samples, outcome.context)


def select_kept(outcomes: list[Outcome], min_reward: float) -> list[Kept]:
    """The knowledge filter: per context, the best self-edit among those that may teach the teacher."""
    return keep_samples([outcome_samples(o) for o in outcomes], min_reward, "best")


class KnowledgeDomain:
    """Knowledge incorporation's E-step: an adaptation pass over the contexts, through the typed clients."""

    keep: KeepPolicy = "best"

    def __init__(
        self,
        backend: TeacherBackend,
        contexts: list[Context],
        student: StudentClient,
        auditor: AuditorClient,
        config: TeacherConfig,
        book: VersionBook,
    ):
        self.backend, self.contexts, self.student, self.auditor = backend, contexts, student, auditor
        self.config, self.book = config, book
        self.timeouts = (config.train_timeout_s, config.judge_timeout_s)
        self.settings = repeat_settings(student, config.restem.repeats, config.train_timeout_s)

    def e_step(self, round_index: int, version: TeacherVersion) -> list[TaskSamples]:
        """K self-edits per context with ``version``, trained and judged; resumed from ``round-<r>/``."""
        propose_for = proposer_for(self.backend, self.config, version.version, self.book.bank(version))
        folder = self.config.run_dir / f"round-{round_index}"
        outcomes = run_pass(
            self.contexts,
            propose_for,
            self.student,
            self.auditor,
            folder,
            self.timeouts,
            self.settings,
            propose_ahead=self.config.propose_ahead,
        )
        return [outcome_samples(o) for o in outcomes]


def run_restem(
    backend: TeacherBackend,
    contexts: list[Context],
    student: StudentClient,
    auditor: AuditorClient,
    config: TeacherConfig,
) -> list[RoundSummary]:
    """``config.restem.rounds`` rounds of knowledge ReST^EM; resumes from ``config.run_dir``."""
    book = VersionBook(config.run_dir)
    domain = KnowledgeDomain(backend, contexts, student, auditor, config, book)
    restem = config.restem
    return run_rounds(domain, backend, book, auditor, restem.rounds, restem.min_reward, MStepConfig.of(config))


def repeat_settings(student: StudentClient, repeats: int, timeout_s: float) -> list[TrainConfig | None] | None:
    """With ``repeats`` > 1: the student's default settings once per seed; otherwise None (train once)."""
    if repeats == 1:
        return None
    base = student.describe(timeout_s).default_settings
    return [base.model_copy(update={"seed": base.seed + i}) for i in range(repeats)]
