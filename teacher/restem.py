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

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from library.teaching import Judged, mean_reward, teaching_problem
from protocol.clients import AuditorClient, StudentClient
from protocol.messages import Context, TrainConfig, Verdict
from teacher.backends import TeacherBackend
from teacher.loop import Outcome, run_pass
from teacher.m_step import Kept, finish_record, make_version
from teacher.proposer import proposer_for
from teacher.versions import TeacherVersion, VersionBook, serve

if TYPE_CHECKING:
    from teacher.config import TeacherConfig

log = logging.getLogger(__name__)


def teaching_edits(outcome: Outcome, min_reward: float) -> dict[str, tuple[float, list[Verdict]]]:
    """Per self-edit id that may teach the teacher (:func:`library.teaching.teaching_problem`): its mean reward
    and its verdicts. A verdict not written to the ledger counts as not accepted: the auditor could not cite it.
    """
    grouped: dict[str, list[Verdict]] = {}
    for verdict in outcome.verdicts:
        grouped.setdefault(verdict.self_edit_id, []).append(verdict)
    eligible = {}
    for edit_id, verdicts in grouped.items():
        judged = [Judged(v.accepted and bool(v.ledger_entry), bool(v.vetoes), v.reward) for v in verdicts]
        if teaching_problem(judged, min_reward) is None:
            eligible[edit_id] = (mean_reward(judged), verdicts)
    return eligible


def select_kept(outcomes: list[Outcome], min_reward: float) -> list[Kept]:
    """ReST^EM's filter: per context, the best self-edit among those that may teach the teacher."""
    kept = []
    for outcome in outcomes:
        rewards = teaching_edits(outcome, min_reward)
        edits = {e.self_edit_id: e for e in outcome.self_edits if e.self_edit_id in rewards and e.text.strip()}
        if not edits:
            continue
        best = max(edits, key=lambda edit_id: (rewards[edit_id][0], edit_id))
        reward, verdicts = rewards[best]
        entries = [v.ledger_entry for v in verdicts]
        kept.append(Kept(outcome.context, edits[best], reward, entries, verdicts[0].adapter_id))
    return kept


def run_restem(
    backend: TeacherBackend,
    contexts: list[Context],
    student: StudentClient,
    auditor: AuditorClient,
    config: TeacherConfig,
) -> list[RoundSummary]:
    """``config.restem.rounds`` rounds of E-step, filter and M-step; resumes from ``config.run_dir``."""
    book = VersionBook(config.run_dir)
    timeouts = (config.train_timeout_s, config.judge_timeout_s)
    settings = repeat_settings(student, config.restem.repeats, config.train_timeout_s)
    summaries = []
    for r in range(config.restem.rounds):
        version = book.made_in(r - 1)  # v0 for round 0; the previous round's M-step made the others
        if version is None:
            raise RuntimeError(f"{book.path} has no version made by round {r - 1}: rounds run in order")
        serve(backend, version, book)
        propose_for = proposer_for(backend, config, version.version, book.bank(version))
        log.info("round %d: E-step with teacher %s", r, version.version)
        outcomes = run_pass(contexts, propose_for, student, auditor, config.run_dir / f"round-{r}", timeouts, settings)
        kept = select_kept(outcomes, config.restem.min_reward)
        made = book.made_in(r)
        if made is None:
            made = make_version(backend, kept, r, book, version, auditor, config)
        elif made.ledger_entry is None and made.kind != "base":  # made, but the run stopped before the record
            made = finish_record(backend, made, kept, book, auditor, config)
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


def repeat_settings(student: StudentClient, repeats: int, timeout_s: float) -> list[TrainConfig | None] | None:
    """With ``repeats`` > 1: the student's default settings once per seed; otherwise None (train once)."""
    if repeats == 1:
        return None
    base = student.describe(timeout_s).default_settings
    return [base.model_copy(update={"seed": base.seed + i}) for i in range(repeats)]
