"""The knowledge bench's outputs: a markdown table, a JSON of every record, and a plot.

Every figure is a mean over questions with its 95% confidence interval
(:func:`auditor.grading.mean_ci95`) and the number of questions behind it.
"""

from __future__ import annotations

import collections
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from auditor.grading import answer_recall, mean_ci95
from library.jsonl import read_jsonl, write_jsonl

METRICS = (
    ("exact_match", "exact match"),
    ("f1", "F1"),
    ("answer_recall", "answer recall"),
    ("loglik", "gold log-lik (nats/token)"),
)
GAIN_METRICS = ("f1", "answer_recall", "loglik")
"""The metrics of the paired-gains table."""
REFERENCES = ("no adaptation", "passage only", "teacher v0")
"""Conditions every other one is compared with, question by question."""


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
            row["judge_failed"] = sum("judge" in r and r["judge"] is None for r in mine)
            row["judge_not_asked"] = sum("judge" not in r for r in mine)  # scored before --judge was given
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


def paired_gains(conditions: list[str], records: list[dict], reference: str) -> list[dict[str, Any]]:
    """Per condition after ``reference``: the mean per-question difference from it, with its 95% CI.

    Pairing removes the spread between questions, which dominates the unpaired intervals. ``ci95`` treats
    questions as independent; ``ci95_by_passage`` is over per-passage mean differences, the honest interval
    when a passage's questions share one adapter (single-passage mode).
    """
    by_key = _keyed_by_question(records)
    rows = []
    for condition in conditions:
        pairs = [
            (by_key[key], by_key[(reference, *key[1:])])
            for key in by_key
            if key[0] == condition and (reference, *key[1:]) in by_key
        ]
        if not pairs or conditions.index(condition) <= conditions.index(reference):
            continue  # each pair once, the later condition against the earlier reference
        passages = sorted({mine["context_id"] for mine, _ in pairs})
        row: dict[str, Any] = {
            "condition": condition,
            "reference": reference,
            "n_questions": len(pairs),
            "n_passages": len(passages),
        }
        for key in GAIN_METRICS:
            mean, half = mean_ci95([mine[key] - ref[key] for mine, ref in pairs])
            per_passage = [
                statistics.fmean(mine[key] - ref[key] for mine, ref in pairs if mine["context_id"] == passage)
                for passage in passages
            ]
            _, passage_half = mean_ci95(per_passage)
            row[key] = {"mean": mean, "ci95": half, "ci95_by_passage": passage_half}
        rows.append(row)
    return rows


def _keyed_by_question(records: list[dict]) -> dict[tuple[str, str, str, int], dict]:
    """Records by (condition, passage, question, occurrence): a passage may ask the same question twice,
    and each asking pairs with the same asking under the other condition (records keep τ's order)."""
    seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
    keyed = {}
    for record in records:
        key = (record["condition"], record["context_id"], record["question"])
        keyed[(*key, seen[key])] = record
        seen[key] += 1
    return keyed


def gains_table(gains: list[dict[str, Any]]) -> str:
    """Paired gains as a markdown table."""
    lines = [
        "| condition | vs | questions / passages | Δ F1 | Δ answer recall | Δ gold log-lik "
        "| Δ gold log-lik, CI by passage |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in gains:
        cells = [f"{row[key]['mean']:+.3f} ± {row[key]['ci95']:.3f}" for key in GAIN_METRICS]
        cells.append(f"{row['loglik']['mean']:+.3f} ± {row['loglik']['ci95_by_passage']:.3f}")
        head = f"| {row['condition']} | {row['reference']} | {row['n_questions']} / {row['n_passages']} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, conditions: list[str], records: list[dict], config: dict, wall_s: float) -> Path:
    """``results.md``, ``results.json`` and ``results.png`` in ``out``; returns the markdown file.

    Records made before answer recall was recorded get it here, from their answer and gold answers.
    """
    for record in records:
        record.setdefault("answer_recall", answer_recall(record["answer"], record["gold"]))
    summary = summarise(conditions, records)
    gains = [g for ref in REFERENCES for g in paired_gains(conditions, records, ref)]
    settings = json.dumps(config, sort_keys=True)
    text = f"{markdown_table(summary)}\n\nPaired gains (same questions):\n\n{gains_table(gains)}\n\n"
    text += f"- wall time: {wall_s:.0f} s\n- settings: `{settings}`\n"
    (out / "results.md").write_text(text)
    payload = {"config": config, "wall_seconds": wall_s, "summary": summary, "paired_gains": gains, "records": records}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    plot(summary, gains, out / "results.png")
    return out / "results.md"


def plot(summary: list[dict[str, Any]], gains: list[dict[str, Any]], path: Path) -> None:
    """Exact match, F1 and answer recall per condition, and the paired log-likelihood gain over no adaptation.

    Bars carry 95% CIs; teacher versions appear in round order (v0, v1, ...), so the last panel also reads
    as the gain by ReST^EM round.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    panels = [
        ("exact match", [(r["condition"], r["exact_match"]) for r in summary]),
        ("F1", [(r["condition"], r["f1"]) for r in summary]),
        ("answer recall", [(r["condition"], r["answer_recall"]) for r in summary]),
        (
            "gold log-lik gain over no adaptation\n(nats/token, paired by question)",
            [(g["condition"], g["loglik"]) for g in gains if g["reference"] == "no adaptation"],
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8))
    for ax, (title, bars) in zip(axes, panels, strict=True):
        names = [name for name, _ in bars]
        ax.bar(range(len(bars)), [v["mean"] for _, v in bars], yerr=[v["ci95"] for _, v in bars], capsize=4)
        ax.set_xticks(range(len(bars)), names, rotation=30, ha="right")
        ax.set_title(title)
    n = summary[0]["n_questions"] if summary else 0
    fig.suptitle(f"seal bench knowledge: closed-book scores after the update ({n} questions, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_runs(out: Path, runs: list[Path]) -> Path:
    """One report over several bench folders that split the passages (e.g. ``--offset 0 --limit 30`` and
    ``--offset 30 --limit 20`` run side by side); each must have finished (its ``results.json``).

    Each run's self-edits are kept beside the report as ``self_edits_<first>-<last>.jsonl`` (passage indices),
    so :func:`unpack_runs` can rebuild the folders from what is kept."""
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    conditions = list(dict.fromkeys(row["condition"] for result in results for row in result["summary"]))
    records = [record for result in results for record in result["records"]]
    config = {"merged": [str(run) for run in runs], "runs": [result["config"] for result in results]}
    out.mkdir(parents=True, exist_ok=True)
    names = [
        _self_edits_name(result["config"], read_jsonl(run / "self_edits.jsonl"))
        for run, result in zip(runs, results, strict=True)
    ]
    if len(set(names)) < len(names):
        raise ValueError(f"runs that cover the same passages cannot be merged: {', '.join(names)}")
    for run, name in zip(runs, names, strict=True):
        shutil.copyfile(run / "self_edits.jsonl", out / name)
    return write_report(out, conditions, records, config, sum(result["wall_seconds"] for result in results))


def unpack_runs(kept: Path, parent: Path) -> list[Path]:
    """The bench folders a merged report was made from, rebuilt under ``parent`` from what is kept in ``kept``
    (its ``results.json`` and ``self_edits_<first>-<last>.jsonl``): each with its config, self-edits and
    records, so ``seal bench knowledge --out FOLDER --teacher-run RUN`` with the same settings resumes it and
    trains and scores only the new teacher versions, paired with the kept conditions. A folder that exists and
    is not empty is refused (ValueError), as unpacking over a run would drop what it scored since."""
    result = json.loads((kept / "results.json").read_text())
    runs = result["config"]["runs"]
    folders = [parent / Path(config["out"]).name for config in runs]
    taken = [f for f in folders if f.exists() and any(f.iterdir())]
    if taken or len(set(folders)) < len(folders):
        raise ValueError(f"unpack into empty folders of distinct names: {', '.join(map(str, taken or folders))}")
    names = {p.name: p for p in kept.glob("self_edits_*.jsonl")}
    for folder, config in zip(folders, runs, strict=True):
        first = config.get("offset") or 0
        [name] = [n for n in names if n.startswith(f"self_edits_{first}-")]
        edits = read_jsonl(names[name])
        mine = {row["context_id"] for row in edits}
        folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(folder / "self_edits.jsonl", edits)
        write_jsonl(folder / "records.jsonl", [r for r in result["records"] if r["context_id"] in mine])
        (folder / "config.json").write_text(json.dumps(config | {"out": str(folder)}, indent=1))
    return folders


def _self_edits_name(config: dict[str, Any], edits: list[dict[str, Any]]) -> str:
    """``self_edits_<first>-<last>.jsonl``: the passage indices a run covered (its offset and passage count)."""
    first, count = config.get("offset") or 0, len({row["context_id"] for row in edits})
    return f"self_edits_{first}-{first + count - 1}.jsonl"


if __name__ == "__main__":  # python -m apps.knowledge_report OUT RUN [RUN ...] | --unpack KEPT PARENT
    import sys

    if sys.argv[1] == "--unpack":
        for folder in unpack_runs(Path(sys.argv[2]), Path(sys.argv[3])):
            print(folder)
    else:
        print(merge_runs(Path(sys.argv[1]), [Path(arg) for arg in sys.argv[2:]]).read_text())
