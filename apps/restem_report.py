"""The summary of a knowledge ReST^EM run folder, finished or still under way, as files to keep.

``python -m apps.restem_report RUN_DIR OUT`` reads what ``seal train-teacher`` wrote (``round-<r>/results.jsonl``,
``teacher/versions.json``, ``ledger.jsonl`` and the teacher's settings in ``config/teacher.yaml``) and writes
``OUT/rounds.md`` (per round: contexts finished of those asked, candidates, rewards, kept, the version made;
the versions with their ledger entries; the ledger's check) and ``OUT/rounds.json`` (the same, plus every
context's rewards). A run folder holds the run's keys and adapters and is not kept; this summary is, and its
ledger entry hashes are anchors for the ledger (:func:`library.ledger.verify_ledger`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from library.ledger import read_entries, verify_ledger
from teacher.config import TeacherConfig
from teacher.loop import load_outcomes
from teacher.report import round_figures
from teacher.restem import keep_samples, outcome_samples
from teacher.versions import VersionBook


def summarise(run_dir: Path) -> dict[str, Any]:
    """Every round begun in ``run_dir``: its figures, each context's rewards, and the version it made."""
    config = TeacherConfig.model_validate(yaml.safe_load((run_dir / "config" / "teacher.yaml").read_text()))
    book = VersionBook(run_dir)
    rounds = []
    for r in range(config.restem.rounds):
        outcomes = list(load_outcomes(run_dir / f"round-{r}" / "results.jsonl").values())
        if not outcomes:
            break
        tasks = [outcome_samples(o) for o in outcomes]
        kept = keep_samples(tasks, config.restem.min_reward, "best")
        sampled_by, made = book.made_in(r - 1), book.made_in(r)
        rounds.append(
            {
                "round": r,
                "sampled_by": sampled_by.version if sampled_by else None,
                "contexts_asked": config.limit,
                **asdict(round_figures(tasks, kept)),
                "accepted": sum(v.accepted for o in outcomes for v in o.verdicts),
                "made": made.version if made else None,
                "contexts": [_context_row(o, {k.example.self_edit_id for k in kept}) for o in outcomes],
            }
        )
    ledger = run_dir / "ledger.jsonl"
    report = verify_ledger(ledger)
    kinds = Counter(entry["kind"] for entry in read_entries(ledger)) if ledger.is_file() else Counter()
    return {
        "run_dir": str(run_dir),
        "settings": {
            "k": config.k,
            "format": config.format,
            "limit": config.limit,
            "per_title": config.per_title,
            "rounds": config.restem.rounds,
            "min_reward": config.restem.min_reward,
        },
        "rounds": rounds,
        "versions": [asdict(v) for v in book.versions],
        "ledger": {"ok": report.ok, "entries": report.entries, "kinds": dict(kinds), "problems": report.problems},
    }


def _context_row(outcome, kept_ids: set[str]) -> dict[str, Any]:
    return {
        "context_id": outcome.context.context_id,
        "title": outcome.context.title,
        "rewards": [round(v.reward, 4) for v in outcome.verdicts],
        "accepted": sum(v.accepted for v in outcome.verdicts),
        "vetoed_before_training": len(outcome.vetoed),
        "kept": [e.self_edit_id for e in outcome.self_edits if e.self_edit_id in kept_ids],
    }


def markdown(summary: dict[str, Any]) -> str:
    """The rounds table, the versions with their ledger entries, and the ledger's check."""
    lines = [
        "| round | sampled by | contexts (of --limit) | candidates | accepted | mean reward | mean best reward "
        "| kept | made |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["rounds"]:
        made = r["made"] or ("not yet" if r["tasks"] == r["contexts_asked"] else "round under way")
        lines.append(
            f"| {r['round']} | {r['sampled_by']} | {r['tasks']} of {r['contexts_asked']} | {r['candidates']} "
            f"| {r['accepted']} | {r['mean_reward']:+.3f} | {r['mean_best_reward']:+.3f} | {r['kept']} | {made} |"
        )
    lines += [
        "",
        "| version | round | kind | examples | SFT loss first → last | ledger entry |",
        "|---|---:|---|---:|---|---|",
    ]
    for v in summary["versions"]:
        losses = f"{v['losses'][0]:.3f} → {v['losses'][-1]:.3f}" if v["losses"] else "–"
        lines.append(
            f"| {v['version']} | {v['round']} | {v['kind']} | {v['examples']} | {losses} | {v['ledger_entry'] or '–'} |"
        )
    ledger = summary["ledger"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(ledger["kinds"].items()))
    state = "verified" if ledger["ok"] else "PROBLEMS: " + "; ".join(ledger["problems"])
    lines += ["", f"Ledger: {ledger['entries']} entries ({kinds}), {state}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.restem_report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="A seal train-teacher run folder (knowledge domain).")
    parser.add_argument("out", type=Path, help="Folder for rounds.md and rounds.json.")
    args = parser.parse_args(argv)
    if not (args.run_dir / "config" / "teacher.yaml").is_file():
        print(f"{args.run_dir} is not a seal train-teacher run folder (no config/teacher.yaml)", file=sys.stderr)
        return 2
    summary = summarise(args.run_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rounds.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(summary)
    (args.out / "rounds.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
