"""The summary of a knowledge ReST^EM run folder, finished or still under way, as files to keep.

``python -m apps.restem_report RUN_DIR OUT`` reads what ``seal train-teacher`` wrote (``round-<r>/results.jsonl``,
``teacher/versions.json``, ``ledger.jsonl`` and the teacher's settings in ``config/teacher.yaml``) and writes
``OUT/rounds.md`` (per round: contexts finished of those asked, candidates, rewards, kept, the version made;
the versions with their ledger entries; the ledger's check) and ``OUT/rounds.json`` (the same, plus every
context's rewards). A run folder holds the run's keys and adapters and is not kept; this summary is, and its
ledger entry hashes are anchors for the ledger (:func:`library.ledger.verify_ledger`).

``--carry`` also writes ``OUT/carry/``: what continues the run in a fresh folder, on another machine or in a
later session (:func:`carry`). Copy it to a new run folder and rerun the same ``seal train-teacher`` command
there: the finished rounds and the versions made are not redone, and the run goes on with new keys and a new
ledger; the carried run's ledger and its public verify key are kept under ``earlier/`` as the record the
carried versions cite.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    versions = [asdict(v) | {"recorded_in": _recorded_in(run_dir, v.ledger_entry)} for v in book.versions]
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
        "versions": versions,
        "ledger": {"ok": report.ok, "entries": report.entries, "kinds": dict(kinds), "problems": report.problems},
        "earlier_ledgers": [_earlier_ledger(folder) for folder in sorted((run_dir / EARLIER).glob("*"))],
    }


EARLIER = "earlier"
"""A run folder's record of the runs it was carried from: ``earlier/<head>/`` with their ledger and verify key."""


def carry(run_dir: Path, out: Path) -> list[str]:
    """Write ``out``: what continues ``run_dir`` in a fresh folder; returns what was left behind, one line each.

    Carried: each round whose version is made (its ``results.jsonl``), the teacher's versions with their
    adapters (``teacher/``), and the run's ledger, head file and public verify key under
    ``earlier/<head hash>/`` (with any earlier ones it holds itself). Not carried: the keys' secret halves, the
    candidates' adapters, and a round under way, whose finished contexts cite verdicts in this run's ledger,
    which the continued run's auditor cannot hold: that round is redone there.
    """
    config = TeacherConfig.model_validate(yaml.safe_load((run_dir / "config" / "teacher.yaml").read_text()))
    book = VersionBook(run_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists: carry into a new folder")
    left = []
    for r in range(config.restem.rounds):
        results = run_dir / f"round-{r}" / "results.jsonl"
        if not results.is_file():
            break
        if book.made_in(r) is None:
            left.append(f"round {r} is under way: its {len(load_outcomes(results))} finished contexts are redone")
            break
        (out / f"round-{r}").mkdir(parents=True)
        shutil.copyfile(results, out / f"round-{r}" / "results.jsonl")
    shutil.copytree(run_dir / "teacher", out / "teacher")
    if (run_dir / EARLIER).is_dir():
        shutil.copytree(run_dir / EARLIER, out / EARLIER)
    head = json.loads((run_dir / "ledger.head.json").read_text())
    record = out / EARLIER / str(head["last_hash"])[:16]
    record.mkdir(parents=True)
    for name in ("ledger.jsonl", "ledger.head.json"):
        shutil.copyfile(run_dir / name, record / name)
    shutil.copyfile(run_dir / "keys" / "auditor.sign.pub", record / "auditor.sign.pub")
    return left


def _recorded_in(run_dir: Path, entry: str | None) -> str | None:
    """Which ledger holds a version's record: ``ledger.jsonl`` (this run's), ``earlier/<head>``, or None."""
    if entry is None:
        return None
    for ledger in [run_dir / "ledger.jsonl", *sorted((run_dir / EARLIER).glob("*/ledger.jsonl"))]:
        if ledger.is_file() and any(e["hash"] == entry for e in read_entries(ledger)):
            return str(ledger.parent.relative_to(run_dir) / ledger.name)
    return None


def _earlier_ledger(folder: Path) -> dict[str, Any]:
    report = verify_ledger(folder / "ledger.jsonl")
    return {"folder": str(folder.name), "ok": report.ok, "entries": report.entries, "problems": report.problems}


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
        "| version | round | kind | examples | SFT loss first → last | ledger entry | recorded in |",
        "|---|---:|---|---:|---|---|---|",
    ]
    for v in summary["versions"]:
        losses = f"{v['losses'][0]:.3f} → {v['losses'][-1]:.3f}" if v["losses"] else "–"
        lines.append(
            f"| {v['version']} | {v['round']} | {v['kind']} | {v['examples']} | {losses} | {v['ledger_entry'] or '–'} "
            f"| {v['recorded_in'] or '–'} |"
        )
    ledger = summary["ledger"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(ledger["kinds"].items()))
    lines += ["", f"Ledger: {ledger['entries']} entries ({kinds}), {_state(ledger)}."]
    lines += [f"Earlier ledger {e['folder']}: {e['entries']} entries, {_state(e)}." for e in summary["earlier_ledgers"]]
    return "\n".join(lines) + "\n"


def _state(report: dict[str, Any]) -> str:
    return "verified" if report["ok"] else "PROBLEMS: " + "; ".join(report["problems"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.restem_report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="A seal train-teacher run folder (knowledge domain).")
    parser.add_argument("out", type=Path, help="Folder for rounds.md and rounds.json.")
    parser.add_argument(
        "--carry", action="store_true", help="Also write OUT/carry/: what continues the run in a fresh folder."
    )
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
    if args.carry:
        for line in carry(args.run_dir, args.out / "carry"):
            print(f"not carried: {line}")
        print(f"carried to {args.out / 'carry'}: copy it to a new run folder and rerun the same command there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
