"""The outer loop, driven by the teacher: propose, apply, judge, collect rewards.

Each finished context is appended to ``results.jsonl`` in the run folder, and a
rerun skips contexts already there, so an interrupted pass resumes. Candidates are
trained on top of the stack the student serves (the base model when none is), which
is also what the auditor judges them against.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from library.jsonl import append_jsonl, read_jsonl
from protocol.clients import AuditorClient, StudentClient
from protocol.messages import (
    CandidateToJudge,
    Context,
    Review,
    SelfEdit,
    TrainConfig,
    TrainJob,
    Verdict,
)
from teacher.rehearsal import accepted_self_edits, rehearsal_sample


@dataclass
class Outcome:
    """What happened to one context: its self-edits and the auditor's verdicts on them."""

    context: Context
    self_edits: list[SelfEdit]
    verdicts: list[Verdict]
    vetoed: list[Review] = field(default_factory=list)  # self-edits the auditor's rules stopped before training

    def to_record(self) -> dict[str, Any]:
        """One line of ``results.jsonl``."""
        return {
            "context": self.context.model_dump(),
            "self_edits": [e.model_dump() for e in self.self_edits],
            "verdicts": [v.model_dump() for v in self.verdicts],
            "vetoed": [r.model_dump() for r in self.vetoed],
        }

    def summary(self) -> str:
        """One line: the context, how many candidates were accepted, the best reward."""
        accepted = sum(v.accepted for v in self.verdicts)
        rewards = [v.reward for v in self.verdicts]
        best = f", best reward {max(rewards):+.3f}" if rewards else ""
        vetoed = f", {len(self.vetoed)} vetoed before training" if self.vetoed else ""
        title = self.context.title or self.context.context_id
        return f"{title}: {accepted} of {len(self.verdicts)} candidates accepted{best}{vetoed}"

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            Context.model_validate(data["context"]),
            [SelfEdit.model_validate(e) for e in data["self_edits"]],
            [Verdict.model_validate(v) for v in data["verdicts"]],
            [Review.model_validate(r) for r in data.get("vetoed", [])],
        )


def adapt_context(
    context: Context,
    self_edits: list[SelfEdit],
    student: StudentClient,
    auditor: AuditorClient,
    train_timeout_s: float,
    judge_timeout_s: float,
    settings: list[TrainConfig | None] | None = None,
    rehearsal: list[SelfEdit] | None = None,
) -> Outcome:
    """Have the auditor's rules review the self-edits, train the rest as candidates, have them judged.

    ``settings``: train every allowed self-edit once per entry (e.g. the same settings with R seeds, whose
    verdicts are then averaged); None trains each once with the student's defaults. Every candidate is
    trained on top of the served stack, with the lines of the ``rehearsal`` self-edits mixed in.
    """
    if not self_edits:  # every sample was refused by an API teacher: a failed proposal, no candidates
        return Outcome(context, [], [])
    reviewed = auditor.review_self_edits(self_edits, judge_timeout_s)
    vetoed = [r for r in reviewed.reviews if r.vetoes]
    allowed = [e for e, r in zip(self_edits, reviewed.reviews, strict=True) if not r.vetoes]
    if not allowed:
        return Outcome(context, self_edits, [], vetoed)
    stack = student.describe_served(train_timeout_s).stack
    jobs = [
        TrainJob(context=context, self_edit=e, settings=s, on_top_of=stack, rehearsal=rehearsal or [])
        for e in allowed
        for s in (settings or [None])
    ]
    trained = student.apply_self_edits(jobs, train_timeout_s)
    to_judge = [
        CandidateToJudge(self_edit=j.self_edit, candidate=c) for j, c in zip(jobs, trained.candidates, strict=True)
    ]
    judged = auditor.judge_candidates(context.context_id, to_judge, judge_timeout_s)
    return Outcome(context, self_edits, judged.verdicts, vetoed)


def load_outcomes(results: Path) -> dict[str, Outcome]:
    """Finished contexts of an earlier run, by context id (a torn last line is dropped)."""
    outcomes = (Outcome.from_record(record) for record in read_jsonl(results))
    return {outcome.context.context_id: outcome for outcome in outcomes}


def run_pass(
    contexts: list[Context],
    propose: Callable[[Context], list[SelfEdit]],
    student: StudentClient,
    auditor: AuditorClient,
    run_dir: Path,
    timeouts: tuple[float, float] = (1800.0, 1800.0),
    settings: list[TrainConfig | None] | None = None,
    rehearsal: tuple[int, int] = (0, 0),
    before_context: Callable[[list[str]], None] | None = None,
    propose_ahead: bool = False,
) -> list[Outcome]:
    """One adaptation pass over ``contexts``, resumable from ``run_dir/results.jsonl``.

    ``settings`` as in :func:`adapt_context` (repeated trainings per self-edit). ``rehearsal``: (how many, seed):
    each context's candidates rehearse that many self-edits accepted for the contexts finished before it.
    ``before_context``: called with the ids of the contexts finished so far before each new one is adapted
    (``seal adapt``'s teacher waits there until the launcher has promoted what they learned).
    ``propose_ahead``: sample the next context's self-edits while this one's are trained and judged
    (:class:`Proposals`).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    results = run_dir / "results.jsonl"
    done = load_outcomes(results)
    todo = list({c.context_id: c for c in contexts if c.context_id not in done}.values())  # each context once
    proposals = Proposals(propose, todo, propose_ahead)
    with _progress() as progress:
        task = progress.add_task("contexts", total=len(contexts), completed=len(contexts) - len(todo))
        for context in todo:
            if before_context is not None:
                before_context(list(done))
            progress.update(task, description=escape(context.title[:30] or context.context_id))
            earlier = [e for o in done.values() for e in accepted_self_edits(o.self_edits, o.verdicts)]
            replay = rehearsal_sample(earlier, *rehearsal, context.context_id)
            outcome = adapt_context(context, proposals.take(), student, auditor, *timeouts, settings, replay)
            append_jsonl(results, outcome.to_record())
            done[context.context_id] = outcome
            progress.advance(task)
            progress.console.print(
                escape(f"{len(done)}/{len(contexts)} {outcome.summary()}")
            )  # a line each, tty or not
    return [done[c.context_id] for c in contexts]


class Proposals:
    """Each context's self-edits, taken in the contexts' order.

    With ``ahead``, once a context's self-edits are taken the next context's are sampled in a background
    thread, so the teacher samples while the student trains and the auditor judges, instead of the three
    taking turns. The samples are the same: one context at a time, in order, each with its sampling seed; but
    the sampler uses its process's torch random state, so proposing ahead is for a teacher in a process of its
    own (the launchers'), not one sharing a process with a training student. A failed proposal is raised when
    its context's turn comes, as without ``ahead``.
    """

    def __init__(self, propose: Callable[[Context], list[SelfEdit]], contexts: list[Context], ahead: bool):
        self._propose, self._contexts, self._ahead = propose, contexts, ahead
        self._taken = 0
        self._next: _BackgroundProposal | None = None

    def take(self) -> list[SelfEdit]:
        """The next context's self-edits: sampled now, or waited for if they are being sampled ahead."""
        context = self._contexts[self._taken]
        self._taken += 1
        edits = self._next.result() if self._next is not None else self._propose(context)
        self._next = None
        if self._ahead and self._taken < len(self._contexts):
            self._next = _BackgroundProposal(self._propose, self._contexts[self._taken])
        return edits


class _BackgroundProposal:
    """One context's proposal in a daemon thread (an interrupted run does not wait for it to finish)."""

    def __init__(self, propose: Callable[[Context], list[SelfEdit]], context: Context):
        self._edits: list[SelfEdit] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(propose, context), name="propose-ahead", daemon=True)
        self._thread.start()

    def _run(self, propose: Callable[[Context], list[SelfEdit]], context: Context) -> None:
        try:
            self._edits = propose(context)
        except BaseException as exc:  # handed to the caller of result(), in its thread
            self._error = exc

    def result(self) -> list[SelfEdit]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._edits


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
