"""``seal bench continual``'s outputs: per arm the forgetting matrix, the mean over seen passages, a plot.

Built from ``steps.jsonl`` alone (one record per arm, step and seen passage: the served stack's right answers,
by answer recall, on that passage's questions after the step). The mean after step t is over every question of
passages 1..t, with its 95% interval (:func:`auditor.grading.mean_ci95`). Written as ``report.md`` and
``results.json`` beside ``continual.png`` (means per step) and one ``forgetting_<arm>.png`` per arm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from apps.continual_config import ARMS, ContinualBenchConfig
from apps.forgetting import ForgettingMatrix, ForgettingRecord, forgetting_matrix, plot_matrix
from auditor.grading import mean_ci95
from protocol.messages import Context


def arm_matrix(steps: list[dict[str, Any]], arm: str, titles: dict[str, str]) -> ForgettingMatrix:
    """Accuracy on passage i after step j in ``arm``."""
    records = [
        ForgettingRecord(r["step"], titles.get(r["context_id"], r["context_id"][:12]), sum(r["right"]), len(r["right"]))
        for r in steps
        if r["arm"] == arm and r["right"]
    ]
    return forgetting_matrix(records)


def seen_means(steps: list[dict[str, Any]], arm: str) -> list[dict[str, Any]]:
    """After each step of ``arm``: mean right answers over all seen questions, its 95% half-width, the stack depth."""
    out = []
    for step in sorted({r["step"] for r in steps if r["arm"] == arm}):
        rows = [r for r in steps if r["arm"] == arm and r["step"] == step]
        values = [float(v) for r in rows for v in r["right"]]
        mean, half = mean_ci95(values)
        out.append({"step": step, "mean": mean, "ci95": half, "questions": len(values), "stack": rows[0]["stack"]})
    return out


def write_report(
    config: ContinualBenchConfig, contexts: list[Context], steps: list[dict[str, Any]], command: str, wall_s: float
) -> Path:
    """Write ``report.md``, ``results.json`` and the plots into ``config.out``; returns the report's path."""
    titles = {c.context_id: c.title[:40] or c.context_id[:12] for c in contexts}
    arms = [a for a in ARMS if any(r["arm"] == a for r in steps)]
    means = {arm: seen_means(steps, arm) for arm in arms}
    lines = [
        "# seal bench continual",
        "",
        f"`{command}` · {len(contexts)} passages · wall time {wall_s:.0f} s · model {config.model}",
        "",
        "Mean right answers (answer recall) over every question of the passages seen so far, after each step, "
        "± 95% interval; in brackets the adapters served.",
        "",
        "| after step | " + " | ".join(arms) + " |",
        "|---:|" + "---:|" * len(arms),
    ]
    for i, step in enumerate(m["step"] for m in means[arms[0]]) if arms else []:
        cells = [_mean_cell(means[a][i]) if i < len(means[a]) else "" for a in arms]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    for arm in arms:
        matrix = arm_matrix(steps, arm, titles)
        png = plot_matrix(matrix, config.out / f"forgetting_{arm_slug(arm)}.png", xlabel="after step")
        lines += ["", f"## {arm}: accuracy on passage i after step j ({png.name})", "", matrix.markdown()]
    _plot_means(means, config.out / "continual.png")
    (config.out / "results.json").write_text(
        json.dumps({"command": command, "wall_s": wall_s, "means": means}, indent=1)
    )
    report = config.out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _mean_cell(m: dict[str, Any]) -> str:
    return f"{m['mean']:.2f} ± {m['ci95']:.2f} ({m['stack']})"


def arm_slug(arm: str) -> str:
    """The arm's name as a file or folder name."""
    return arm.replace(" + ", "_and_").replace(" ", "_")


def _plot_means(means: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Mean accuracy on the seen passages per step, one line per arm, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, rows in means.items():
        ax.errorbar([r["step"] for r in rows], [r["mean"] for r in rows], yerr=[r["ci95"] for r in rows],
                    label=arm, capsize=3, marker="o")  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("after step (passages adapted)")
    ax.set_ylabel("right answers on all seen passages")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
