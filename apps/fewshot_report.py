"""The few-shot bench's outputs: per-row counts as a markdown table, a JSON summary and a bar plot."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROWS: dict[str, str] = {
    "in_context": "in-context only (no training)",
    "ttt_untrained": "TTT, self-edits from the untrained teacher",
    "ttt_restem": "TTT, self-edits after ReST^EM",
    "oracle": "TTT, fixed hand-chosen configuration (oracle)",
}
"""Row key -> label, in table order."""


@dataclass
class RowSummary:
    """One table row: how many evaluation tasks were solved, failed, skipped or not run."""

    row: str
    label: str
    tasks: int
    solved: int
    attempted: int
    skipped: int
    failed_proposals: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> str:
        return f"{100 * self.solved / self.attempted:.0f}%" if self.attempted else "n/a"


def summarise(records: list[dict[str, Any]], task_ids: list[str], notes: dict[str, str]) -> list[RowSummary]:
    """A summary per row over ``task_ids``; a row without records is reported as not run, with its note."""
    rows = []
    for row, label in ROWS.items():
        mine = [r for r in records if r["row"] == row and r["task_id"] in task_ids]
        rows.append(
            RowSummary(
                row=row,
                label=label,
                tasks=len(task_ids),
                solved=sum(r["solved"] for r in mine),
                attempted=sum(1 for r in mine if not r.get("skipped") and not r.get("failed_proposal")),
                skipped=sum(1 for r in mine if r.get("skipped")),
                failed_proposals=sum(1 for r in mine if r.get("failed_proposal")),
                seconds=round(sum(r.get("seconds", 0.0) for r in mine), 1),
                note=notes.get(row, "") if mine else notes.get(row, "not run"),
            )
        )
    return rows


def markdown_table(rows: list[RowSummary]) -> str:
    """The table: solved / attempted, with skipped tasks and failed proposals counted apart."""
    lines = [
        "| configuration | solved | attempted | rate | skipped (too long) | failed proposals | seconds | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.solved}/{r.tasks} | {r.attempted} | {r.rate} | {r.skipped} | {r.failed_proposals} "
            f"| {r.seconds:.0f} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, rows: list[RowSummary], extra: dict[str, Any]) -> None:
    """``results.md``, ``summary.json`` and ``solved.png`` (when matplotlib is installed) in ``out_dir``."""
    table = markdown_table(rows)
    (out_dir / "results.md").write_text(table)
    summary = {"rows": [asdict(r) | {"rate": r.rate} for r in rows], **extra}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(out_dir / "solved.png", rows)


def _plot(path: Path, rows: list[RowSummary]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [r.label.replace(", ", ",\n", 1) for r in rows]
    ax.bar(labels, [r.solved for r in rows], color="tab:blue", label="solved")
    ax.bar(
        labels,
        [r.attempted - r.solved for r in rows],
        bottom=[r.solved for r in rows],
        color="tab:gray",
        alpha=0.4,
        label="attempted, not solved",
    )
    ax.set_ylabel("evaluation tasks")
    ax.set_ylim(0, max([r.tasks for r in rows] + [1]))
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
