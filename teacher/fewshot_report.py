"""The few-shot pass's table: per task, the in-context grade, the self-edits, the verdicts."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from protocol.fewshot import ArcGrade


def fewshot_table(records: list[dict[str, Any]], in_context: dict[str, ArcGrade], wall_seconds: float) -> Table:
    """One row per task (a log line of :meth:`teacher.fewshot_restem.FewShotDomain.sample_tasks`), and totals."""
    table = Table(title="seal demo (few-shot ARC)")
    for name in ["task", "in context", "valid self-edits", "solved after TTT", "reward", "adapter", "verdict"]:
        table.add_column(name, justify="left" if name in ("task", "adapter", "verdict") else "right")
    solved_tasks = valid_total = samples_total = 0
    for record in records:
        samples, grade = record["samples"], in_context[record["task_id"]]
        judged = [s for s in samples if s.get("verdict")]
        valid = sum(1 for s in samples if not s.get("failed_proposal"))
        solved = sum(1 for s in judged if s["solved"])
        best = max(judged, key=lambda s: s["reward"], default=None)
        solved_tasks += solved > 0
        valid_total, samples_total = valid_total + valid, samples_total + len(samples)
        table.add_row(
            record["task_id"],
            f"{sum(grade.correct)}/{len(grade.correct)}",
            f"{valid}/{len(samples)}",
            f"{solved}/{len(judged)}",
            f"{best['reward']:.0f}" if best else "-",
            best["verdict"]["adapter_id"][:12] if best else "-",
            _why(best, samples),
        )
    in_context_solved = sum(grade.solved for grade in in_context.values())
    table.caption = (
        f"{solved_tasks} of {len(records)} tasks solved after test-time training, {in_context_solved} in context; "
        f"{valid_total} of {samples_total} self-edits valid JSON; wall time {wall_seconds:.0f} s"
    )
    return table


def _why(best: dict[str, Any] | None, samples: list[dict[str, Any]]) -> str:
    if best is not None:
        return best["verdict"]["reason"]
    skipped = next((s["skipped"] for s in samples if s.get("skipped")), None)
    return f"skipped: {skipped}" if skipped else "no valid self-edit"
