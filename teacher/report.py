"""The end-of-run tables: per candidate of a pass (scores, verdict, adapter), and per ReST^EM round."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table

from protocol.messages import Scores
from teacher.loop import Outcome
from teacher.m_step import Kept
from teacher.restem import RoundSummary, TaskSamples

COLUMNS = [
    "context",
    "right base→cand",
    "F1 base→cand",
    "log-lik base→cand",
    "reward",
    "retention drop",
    "verdict",
    "adapter",
]


def outcomes_table(outcomes: list[Outcome], wall_seconds: float | None = None) -> Table:
    """One row per candidate (and per self-edit vetoed before training); totals in the caption."""
    table = Table(title="seal: one adaptation pass")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("context", "verdict", "adapter") else "right")
    verdicts = [v for o in outcomes for v in o.verdicts]
    for outcome in outcomes:
        title = outcome.context.title[:28] or outcome.context.context_id
        for v in outcome.verdicts:
            verdict = "[green]accepted[/]" if v.accepted else f"[red]rejected[/] ({_short_reason(v.reason)})"
            table.add_row(
                title,
                f"{right_answers(v.base)}→{right_answers(v.candidate)}",
                f"{v.base.f1:.2f}→{v.candidate.f1:.2f}",
                f"{v.base.loglik:.2f}→{v.candidate.loglik:.2f}",
                f"{v.reward:+.3f}",
                f"{v.retention_drop:+.3f}",
                verdict,
                v.adapter_id[:12],
            )
        for review in outcome.vetoed:
            table.add_row(title, "", "", "", "", "", f"[red]vetoed[/] ({review.vetoes[0].reason[:40]})", "-")
    accepted = sum(v.accepted for v in verdicts)
    mean_reward = _mean([v.reward for v in verdicts])
    metric = verdicts[0].metric if verdicts else "-"
    caption = f"{accepted}/{len(verdicts)} candidates accepted · mean reward {mean_reward:+.3f} ({metric})"
    if wall_seconds is not None:
        caption += f" · wall time {wall_seconds:.0f} s"
    table.caption = caption
    return table


def right_answers(scores: Scores) -> str:
    """Questions answered right (answer recall) out of those asked: "3/5"."""
    if scores.answer_recall is None:  # a verdict signed before answer recall was scored
        return "–"
    return f"{round(scores.answer_recall * scores.n_questions)}/{scores.n_questions}"


def _short_reason(reason: str) -> str:
    if reason.startswith("not evaluated"):
        return "not evaluated"
    labels = {
        "vetoed": "veto",
        "retention dropped": "retention",
        "earlier passage": "forgot earlier passage",
        "below the minimum": "gain too small",
    }
    return ", ".join(label for key, label in labels.items() if key in reason)


@dataclass(frozen=True)
class RoundFigures:
    """One round's figures: tasks, candidates judged, their mean reward, the mean of each task's best, kept."""

    tasks: int
    candidates: int
    mean_reward: float
    mean_best_reward: float
    kept: int


def round_figures(tasks: list[TaskSamples], kept: list[Kept]) -> RoundFigures:
    """What the rounds table and the run report show of a round (finished or not)."""
    per_task = [[v.reward for sample in t.samples for v in sample.verdicts] for t in tasks]
    rewards = [reward for task in per_task for reward in task]
    best = [max(task) for task in per_task if task]
    return RoundFigures(len(tasks), len(rewards), _mean(rewards), _mean(best), len(kept))


def rounds_table(summaries: list[RoundSummary], wall_seconds: float | None = None) -> Table:
    """One row per ReST^EM round: who sampled, the mean and best rewards, what was kept, the version made."""
    table = Table(title="seal: ReST^EM rounds")
    for name in ["round", "sampled by", "contexts", "candidates", "mean reward", "mean best reward", "kept", "made"]:
        table.add_column(name, justify="left" if name in ("sampled by", "made") else "right")
    for s in summaries:
        figures = round_figures(s.tasks, s.kept)
        made = f"{s.made.version} ({s.made.kind}, {s.made.examples} examples)"
        table.add_row(
            str(s.round),
            s.sampled_by,
            str(figures.tasks),
            str(figures.candidates),
            f"{figures.mean_reward:+.3f}",
            f"{figures.mean_best_reward:+.3f}",
            str(figures.kept),
            made,
        )
    if wall_seconds is not None:
        table.caption = f"wall time {wall_seconds:.0f} s"
    return table


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
