"""The end-of-pass table: per context, base and candidate scores, verdict and adapter."""

from __future__ import annotations

from rich.table import Table

from teacher.loop import Outcome


def outcomes_table(outcomes: list[Outcome], wall_seconds: float | None = None) -> Table:
    """One row per candidate; totals in the caption."""
    table = Table(title="seal: one adaptation pass", show_lines=False)
    for name, justify in [
        ("context", "left"),
        ("F1 base→cand", "right"),
        ("log-lik base→cand", "right"),
        ("reward", "right"),
        ("retention drop", "right"),
        ("verdict", "left"),
        ("adapter", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    verdicts = [v for o in outcomes for v in o.verdicts]
    for outcome in outcomes:
        for v in outcome.verdicts:
            table.add_row(
                outcome.context.title[:28] or outcome.context.context_id,
                f"{v.base.f1:.2f}→{v.candidate.f1:.2f}",
                f"{v.base.loglik:.2f}→{v.candidate.loglik:.2f}",
                f"{v.reward:+.3f}",
                f"{v.retention_drop:+.3f}",
                "[green]accepted[/]" if v.accepted else "[red]rejected[/]",
                v.adapter_id[:12],
            )
    accepted = sum(v.accepted for v in verdicts)
    mean_reward = sum(v.reward for v in verdicts) / len(verdicts) if verdicts else 0.0
    caption = f"{accepted}/{len(verdicts)} candidates accepted · mean reward {mean_reward:+.3f} ({verdicts[0].metric if verdicts else '-'})"
    if wall_seconds is not None:
        caption += f" · wall time {wall_seconds / 60:.1f} min"
    table.caption = caption
    return table
