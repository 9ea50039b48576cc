"""The outer loop, driven by the teacher: propose, apply, judge, collect rewards.

Each finished context is appended to ``results.jsonl`` in the run folder, and a
rerun skips contexts already there, so an interrupted pass resumes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from protocol.messages import (
    ApplySelfEdits,
    Body,
    CandidateForReview,
    CandidatesTrained,
    Context,
    JudgeCandidates,
    Review,
    Reviews,
    ReviewSelfEdits,
    SelfEdit,
    TrainJob,
    TrainSettings,
    Verdict,
    Verdicts,
)


class Link(Protocol):
    """A request/reply connection to another role (a transport Client)."""

    def call(self, body: Body, timeout_s: float | None = None) -> Body: ...


@dataclass
class Outcome:
    """What happened to one context: its self-edits and the auditor's verdicts on them."""

    context: Context
    self_edits: list[SelfEdit]
    verdicts: list[Verdict]
    vetoed: list[Review] = field(default_factory=list)  # self-edits the auditor's rules stopped before training

    def to_json(self) -> str:
        return json.dumps(
            {
                "context": self.context.model_dump(),
                "self_edits": [e.model_dump() for e in self.self_edits],
                "verdicts": [v.model_dump() for v in self.verdicts],
                "vetoed": [r.model_dump() for r in self.vetoed],
            }
        )

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        data = json.loads(line)
        return cls(
            Context.model_validate(data["context"]),
            [SelfEdit.model_validate(e) for e in data["self_edits"]],
            [Verdict.model_validate(v) for v in data["verdicts"]],
            [Review.model_validate(r) for r in data.get("vetoed", [])],
        )


def adapt_context(
    context: Context,
    self_edits: list[SelfEdit],
    student: Link,
    auditor: Link,
    train_timeout_s: float,
    judge_timeout_s: float,
    settings: list[TrainSettings | None] | None = None,
) -> Outcome:
    """Have the auditor's rules review the self-edits, train the rest as candidates, have them judged.

    ``settings``: train every allowed self-edit once per entry (e.g. the same settings with R seeds, whose
    verdicts are then averaged); None trains each once with the student's defaults.
    """
    if not self_edits:  # every sample was refused by an API teacher: a failed proposal, no candidates
        return Outcome(context, [], [])
    reviewed = auditor.call(ReviewSelfEdits(self_edits=self_edits), judge_timeout_s)
    assert isinstance(reviewed, Reviews)
    vetoed = [r for r in reviewed.reviews if r.vetoes]
    allowed = [e for e, r in zip(self_edits, reviewed.reviews, strict=True) if not r.vetoes]
    if not allowed:
        return Outcome(context, self_edits, [], vetoed)
    jobs = [TrainJob(context=context, self_edit=e, settings=s) for e in allowed for s in (settings or [None])]
    trained = student.call(ApplySelfEdits(jobs=jobs), train_timeout_s)
    assert isinstance(trained, CandidatesTrained)
    reviews = [
        CandidateForReview(self_edit=j.self_edit, candidate=c) for j, c in zip(jobs, trained.candidates, strict=True)
    ]
    judged = auditor.call(JudgeCandidates(context_id=context.context_id, candidates=reviews), judge_timeout_s)
    assert isinstance(judged, Verdicts)
    return Outcome(context, self_edits, judged.verdicts, vetoed)


def load_outcomes(results: Path) -> dict[str, Outcome]:
    """Finished contexts of an earlier run, by context id (a torn last line is ignored)."""
    done: dict[str, Outcome] = {}
    if results.exists():
        for line in results.read_text().splitlines():
            try:
                outcome = Outcome.from_json(line)
            except (ValueError, KeyError):
                continue
            done[outcome.context.context_id] = outcome
    return done


def run_pass(
    contexts: list[Context],
    propose: Callable[[Context], list[SelfEdit]],
    student: Link,
    auditor: Link,
    run_dir: Path,
    timeouts: tuple[float, float] = (1800.0, 1800.0),
    settings: list[TrainSettings | None] | None = None,
) -> list[Outcome]:
    """One adaptation pass over ``contexts``, resumable from ``run_dir/results.jsonl``.

    ``settings`` as in :func:`adapt_context` (repeated trainings per self-edit).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    results = run_dir / "results.jsonl"
    done = load_outcomes(results)
    _end_with_newline(results)  # a torn last line must not swallow the next record
    with _progress() as progress, results.open("a") as sink:
        task = progress.add_task("contexts", total=len(contexts), completed=sum(c.context_id in done for c in contexts))
        for context in contexts:
            if context.context_id in done:
                continue
            progress.update(task, description=f"{context.title[:30] or context.context_id}")
            outcome = adapt_context(context, propose(context), student, auditor, *timeouts, settings)
            sink.write(outcome.to_json() + "\n")
            sink.flush()
            done[context.context_id] = outcome
            progress.advance(task)
    return [done[c.context_id] for c in contexts]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


def _end_with_newline(path: Path) -> None:
    """Terminate a torn last line (a write cut short), so appended records start on their own line."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
