"""The knowledge bench's outputs: a markdown table, a JSON of every record, and a plot.

Every figure is a mean over questions with its 95% confidence interval
(:func:`auditor.grading.mean_ci95`) and the number of questions behind it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditor.grading import mean_ci95

METRICS = (("exact_match", "exact match"), ("f1", "F1"), ("loglik", "gold log-lik (nats/token)"))


def summarise(conditions: list[str], records: list[dict]) -> list[dict[str, Any]]:
    """Per condition, in order: each metric's mean and 95% CI half-width, and the question count.

    With an LLM judge, ``judge`` is the share judged correct among the answers it could grade, and
    ``judge_failed`` counts those it could not (failed calls, refusals, replies neither yes nor no).
    """
    rows = []
    for condition in conditions:
        mine = [r for r in records if r["condition"] == condition]
        if not mine:
            continue
        row: dict[str, Any] = {"condition": condition, "n_questions": len(mine)}
        for key, _ in METRICS:
            mean, half = mean_ci95([r[key] for r in mine])
            row[key] = {"mean": mean, "ci95": half}
        if any("judge" in r for r in mine):
            graded = [float(r["judge"]) for r in mine if r.get("judge") is not None]
            mean, half = mean_ci95(graded) if graded else (float("nan"), float("nan"))
            row["judge"] = {"mean": mean, "ci95": half, "graded": len(graded)}
            row["judge_failed"] = len(mine) - len(graded)
        rows.append(row)
    return rows


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The summary as a markdown table, ``mean ± ci95`` per metric (and the judge's, when there is one)."""
    judged = any("judge" in row for row in summary)
    labels = [label for _, label in METRICS] + (["LLM judge", "judge failed"] if judged else [])
    lines = ["| condition | n | " + " | ".join(labels) + " |", "|" + "---|" * (2 + len(labels))]
    for row in summary:
        cells = [f"{row[key]['mean']:.3f} ± {row[key]['ci95']:.3f}" for key, _ in METRICS]
        if judged:
            cells += [f"{row['judge']['mean']:.3f} ± {row['judge']['ci95']:.3f}", str(row["judge_failed"])]
        lines.append(f"| {row['condition']} | {row['n_questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, conditions: list[str], records: list[dict], config: dict, wall_s: float) -> Path:
    """``results.md``, ``results.json`` and ``results.png`` in ``out``; returns the markdown file."""
    summary = summarise(conditions, records)
    table = markdown_table(summary)
    settings = json.dumps(config, sort_keys=True)
    text = f"{table}\n\n- wall time: {wall_s:.0f} s\n- settings: `{settings}`\n"
    (out / "results.md").write_text(text)
    payload = {"config": config, "wall_seconds": wall_s, "summary": summary, "records": records}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    plot(summary, out / "results.png")
    return out / "results.md"


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    """One panel per metric: a bar per condition with its 95% CI (teacher versions in round order)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    names = [row["condition"] for row in summary]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.5))
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        means = [row[key]["mean"] for row in summary]
        errors = [row[key]["ci95"] for row in summary]
        ax.bar(range(len(names)), means, yerr=errors, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(label)
    n = summary[0]["n_questions"] if summary else 0
    fig.suptitle(f"seal bench knowledge: closed-book scores after the update ({n} questions, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
