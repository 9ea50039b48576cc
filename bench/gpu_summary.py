"""The GPU check's summary: each shape's inner-loop table, the issue's goals, and a paper-sized round's time.

    python -m bench.gpu_summary RESULTS_DIR

reads every ``inner_loop_*.json`` that ``bench.inner_loop`` saved in ``RESULTS_DIR`` and writes
``summary.md`` and ``summary.json`` there. A paper-sized round is 50 passages × 5 self-edits × 3
trainings (750 candidates, each trained and fully judged) at the paper's LoRA settings (r=32, α=64,
10 epochs); it is estimated from the largest shape's measured time per candidate at the largest K
up to 15 (a passage's 5 × 3 candidates can be trained together), its training time scaled to 10
epochs when the bench ran fewer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROUND_CANDIDATES = 50 * 5 * 3
ROUND_K = 15  # the candidates of one passage: 5 self-edits × 3 trainings
PAPER_EPOCHS = 10
GOALS = {"ratio_at_k5_small": 4.0, "flops_pct": 50.0, "round_minutes": 30.0}
COLUMNS = [
    ("K", "k"),
    ("seal cand/h", "seal_per_hour"),
    ("baseline cand/h", "baseline_per_hour"),
    ("ratio", "ratio"),
    ("seal train FLOP/s % of matmul", "seal_flops_pct"),
    ("baseline train FLOP/s %", "baseline_flops_pct"),
    ("seal train s", "seal_train_s"),
    ("seal judge s", "seal_judge_s"),
    ("seal peak GPU GiB", "seal_peak_gpu_gib"),
    ("baseline peak GPU GiB", "baseline_peak_gpu_gib"),
]


def load_runs(folder: Path) -> list[dict[str, Any]]:
    """The inner-loop results in ``folder``, smallest model first."""
    runs = [json.loads(path.read_text()) | {"file": path.name} for path in sorted(folder.glob("inner_loop_*.json"))]
    return sorted(runs, key=lambda run: run["machine"].get("parameters", 0))


def round_estimate(run: dict[str, Any]) -> dict[str, Any] | None:
    """Minutes for a paper-sized round from one run's rows (None without a row at K ≤ 15)."""
    rows = [row for row in run["rows"] if row["k"] <= ROUND_K]
    if not rows:
        return None
    row = max(rows, key=lambda r: r["k"])
    candidates = row["k"] * run["machine"].get("contexts", 1)
    epochs = run["machine"]["settings"]["epochs"]
    per_candidate = (row["seal_train_s"] * PAPER_EPOCHS / epochs + row["seal_judge_s"]) / candidates
    return {
        "from": run["file"],
        "k": row["k"],
        "measured_epochs": epochs,
        "seconds_per_candidate": per_candidate,
        "candidates": ROUND_CANDIDATES,
        "minutes": ROUND_CANDIDATES * per_candidate / 60,
    }


def goals(runs: list[dict[str, Any]], estimate: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's three goals, each with its measured value (None where not measured) and whether it is met."""
    small = next((r for r in runs if r["rows"]), None)
    at5 = next((row for row in small["rows"] if row["k"] == 5), None) if small else None
    ratio = at5["ratio"] if at5 else None
    shares = [row["seal_flops_pct"] for run in runs for row in run["rows"]]
    best_share = max(shares) if shares else None
    minutes = estimate["minutes"] if estimate else None
    return {
        "ratio_at_k5_small": _goal(ratio, GOALS["ratio_at_k5_small"], at_least=True),
        "flops_pct": _goal(best_share, GOALS["flops_pct"], at_least=True),
        "round_minutes": _goal(minutes, GOALS["round_minutes"], at_least=False),
    }


def _goal(value: float | None, target: float, at_least: bool) -> dict[str, Any]:
    met = None if value is None else (value >= target if at_least else value <= target)
    return {"value": value, "target": target, "met": met}


def markdown(runs: list[dict[str, Any]], estimate: dict[str, Any] | None, checked: dict[str, Any]) -> str:
    """The summary as markdown: one table per run, then the goals and the estimate."""
    lines = ["# GPU check", ""]
    for run in runs:
        machine = run["machine"]
        title = f"## {run['file']}: {machine.get('shape', 'a model folder')}, {_size(machine.get('parameters', 0))}"
        lines += [title, "", f"`{run['command']}`", ""]
        where = f"{machine.get('gpu', machine.get('device'))}, {machine['dtype']}"
        rate = max(machine.get("matmul_gflops_start", 0), machine.get("matmul_gflops_end", 0))
        lines += [f"{where}; measured matmul {rate:,.0f} GFLOP/s; epochs {machine['settings']['epochs']}", ""]
        if "baseline_error" in machine:
            lines += [f"The baseline failed, so this run has no ratio: {machine['baseline_error']}", ""]
        if "out_of_memory_at_k" in machine:
            lines += [f"K={machine['out_of_memory_at_k']} ran out of GPU memory; larger K were not run.", ""]
        lines += ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_fmt(row.get(key)) for _, key in COLUMNS) + " |" for row in run["rows"]]
        lines.append("")
    lines += ["## Goals", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    names = {
        "ratio_at_k5_small": "ratio to the TRL/peft baseline at K=5, smallest shape",
        "flops_pct": "best training FLOP/s as % of the measured matmul rate",
        "round_minutes": "paper-sized round, minutes (estimate)",
    }
    for key, goal in checked.items():
        met = {True: "yes", False: "no", None: "not measured"}[goal["met"]]
        cmp = ">=" if key != "round_minutes" else "<="
        lines.append(f"| {names[key]} | {_fmt(goal['value'])} | {cmp} {goal['target']} | {met} |")
    lines.append("")
    if estimate:
        lines.append(
            f"Paper-sized round ({ROUND_CANDIDATES} candidates, r=32 α=64 {PAPER_EPOCHS} epochs): "
            f"{estimate['minutes']:.1f} min, from {estimate['from']} at K={estimate['k']} "
            f"({estimate['seconds_per_candidate']:.2f} s per candidate, "
            f"measured at {estimate['measured_epochs']} epochs)."
        )
    else:
        lines.append("Paper-sized round: no measured row to estimate it from.")
    return "\n".join(lines) + "\n"


def _size(parameters: int) -> str:
    return f"{parameters / 1e9:.2f}B parameters" if parameters >= 1e8 else f"{parameters / 1e6:.1f}M parameters"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    """Write ``summary.md`` and ``summary.json`` into the folder given; print the markdown."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.gpu_summary RESULTS_DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    runs = load_runs(folder)
    measured = [run for run in runs if run["rows"]]
    estimate = round_estimate(measured[-1]) if measured else None
    checked = goals(runs, estimate)
    text = markdown(runs, estimate, checked)
    (folder / "summary.md").write_text(text)
    summary = {"runs": [r["file"] for r in runs], "estimate": estimate, "goals": checked}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
