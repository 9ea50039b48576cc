"""Continual adaptation, the auditor's side: judging on top of the served stack and guarding what it learned.

A candidate for a new passage is trained on top of the served stack and judged against it: the student's
provenance must name that very stack (:func:`stack_problem`), and any earlier self-edits mixed into its
training (rehearsal) must be ones this auditor accepted (:func:`rehearsal_problem`). Beside the general
retention set, the candidate answers the questions of every passage whose adapter is in the served stack
(:func:`earlier_contexts`, found through this auditor's own accepting verdicts); it is rejected when one
of those passages' answer recall drops by more than the configured amount (:func:`earlier_failure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditor.grading import answer_recall
from library.datasets import QAItem
from library.ledger import Ledger
from protocol.artifacts import REHEARSED, TRAINED_ON_STACK


@dataclass(frozen=True)
class EarlierPassage:
    """How many of an earlier passage's questions the served stack and the candidate answer right."""

    context_id: str
    questions: int
    before_right: int
    candidate_right: int

    @property
    def drop(self) -> float:
        """Answer recall lost on this passage (before minus candidate; negative: it improved)."""
        return (self.before_right - self.candidate_right) / self.questions if self.questions else 0.0


def stack_problem(provenance: dict[str, Any], served: list[str]) -> str | None:
    """Why the candidate cannot be judged against the served stack ``served``, or None.

    It must have been trained on top of exactly that stack: judged against another model, its gain would
    say nothing about what promoting it (on top of ``served``) would serve.
    """
    trained_on = provenance.get(TRAINED_ON_STACK, [])
    if trained_on == served:
        return None
    return (
        f"it was trained on top of {_stack_name(trained_on)}, but {_stack_name(served)} is served: "
        "train it again on top of the served stack"
    )


def rehearsal_problem(ledger: Ledger, provenance: dict[str, Any]) -> str | None:
    """Why the candidate's rehearsal data is not allowed, or None: each rehearsed self-edit was accepted here."""
    rehearsed = provenance.get(REHEARSED, [])
    if not rehearsed:
        return None
    accepted = {e["record"]["verdict"]["self_edit_sha256"] for e in ledger.find(accepted=True)}
    unknown = [h for h in rehearsed if h not in accepted]
    if not unknown:
        return None
    return f"it rehearsed {len(unknown)} self-edit(s) this auditor never accepted (e.g. sha256 {unknown[0][:12]})"


def earlier_contexts(ledger: Ledger, stack: list[str], current: str) -> list[str]:
    """Context ids of the passages learned by the served stack (bottom first), by this auditor's verdicts.

    An adapter accepted by another auditor has no verdict here and adds no passage; ``current`` (a passage
    being adapted again) is left out, as its own τ judges it.
    """
    by_adapter = {e["record"]["adapter_id"]: e["record"]["context_id"] for e in ledger.find(accepted=True)}
    contexts = [by_adapter[a] for a in stack if a in by_adapter]
    return [c for c in dict.fromkeys(contexts) if c != current]


def earlier_passages(
    earlier: dict[str, list[QAItem]], before_answers: list[str], candidate_answers: list[str]
) -> list[EarlierPassage]:
    """Right answers (answer recall) per earlier passage; the answers follow ``earlier``'s questions in order."""
    passages, start = [], 0
    for context_id, questions in earlier.items():
        end = start + len(questions)
        before = before_answers[start:end]
        after = candidate_answers[start:end]
        passages.append(
            EarlierPassage(
                context_id,
                len(questions),
                sum(int(answer_recall(a, q.answers)) for q, a in zip(questions, before, strict=True)),
                sum(int(answer_recall(a, q.answers)) for q, a in zip(questions, after, strict=True)),
            )
        )
        start = end
    return passages


def earlier_failure(passages: list[EarlierPassage], max_drop: float) -> str | None:
    """The rejection reason when an earlier passage lost more than ``max_drop`` answer recall, or None."""
    lost = [p for p in passages if p.drop > max_drop]
    if not lost:
        return None
    return "; ".join(
        f"earlier passage {p.context_id[:12]} answer recall dropped by {p.drop:.2f} > {max_drop} "
        f"(right {p.before_right}/{p.questions} → {p.candidate_right}/{p.questions})"
        for p in lost
    )


def _stack_name(stack: list[str]) -> str:
    return "the base model" if not stack else "the stack [" + ", ".join(a[:12] for a in stack) + "]"
