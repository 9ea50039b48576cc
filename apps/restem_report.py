"""The summary of a knowledge ReST^EM run folder, finished or still under way, as files to keep.

``python -m apps.restem_report RUN_DIR OUT`` reads what ``seal train-teacher`` wrote (``round-<r>/results.jsonl``,
``teacher/versions.json``, ``ledger.jsonl`` and the teacher's settings in ``config/teacher.yaml``) and writes
``OUT/rounds.md`` (per round: contexts finished of those asked, candidates, rewards, kept, the version made;
each round against the one before on the contexts both finished; the versions with their ledger entries; the
ledger's check) and ``OUT/rounds.json`` (the same, plus every context's rewards). A run folder holds the run's
keys and adapters and is not kept; this summary is, and its ledger entry hashes are anchors for the ledger
(:func:`library.ledger.verify_ledger`).

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
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from auditor.grading import mean_ci95
from library.ledger import LedgerError, WriterLock, head_path_for, read_entries, verify_ledger
from teacher.config import TeacherConfig
from teacher.loop import load_outcomes
from teacher.report import round_figures
from teacher.restem import keep_samples, outcome_samples
from teacher.versions import VersionBook


def run_config(run_dir: Path) -> TeacherConfig:
    """The teacher's settings the run was started with (``config/teacher.yaml``)."""
    return TeacherConfig.model_validate(yaml.safe_load((run_dir / "config" / "teacher.yaml").read_text()))


def summarise(run_dir: Path) -> dict[str, Any]:
    """Every round begun in ``run_dir``: its figures, each context's rewards, and the version it made."""
    config = run_config(run_dir)
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
    held = _entry_ledgers(run_dir)
    versions = [asdict(v) | {"recorded_in": held.get(v.ledger_entry or "")} for v in book.versions]
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
        "round_changes": round_changes(rounds),
        "versions": versions,
        "ledger": {"ok": report.ok, "entries": report.entries, "kinds": dict(kinds), "problems": report.problems},
        "earlier_ledgers": [_earlier_ledger(folder) for folder in sorted((run_dir / EARLIER).glob("*"))],
    }


def round_changes(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each round against the one before, paired by context: the mean change in best and mean reward.

    Only contexts both rounds finished with at least one verdict count; each change comes with the half-width
    of its 95% interval over those contexts (:func:`auditor.grading.mean_ci95`), so a teacher version that
    writes better self-edits for the same passages shows as a positive change beyond its interval.
    """
    changes = []
    for before, after in pairwise(rounds):
        earlier = {c["context_id"]: c["rewards"] for c in before["contexts"] if c["rewards"]}
        pairs = [
            (earlier[c["context_id"]], c["rewards"])
            for c in after["contexts"]
            if c["rewards"] and c["context_id"] in earlier
        ]
        if not pairs:
            continue
        best = mean_ci95([max(b) - max(a) for a, b in pairs])
        mean = mean_ci95([sum(b) / len(b) - sum(a) / len(a) for a, b in pairs])
        changes.append(
            {
                "round": after["round"],
                "against": before["round"],
                "sampled_by": after["sampled_by"],
                "against_sampled_by": before["sampled_by"],
                "contexts": len(pairs),
                "best_reward_change": best[0],
                "best_reward_ci95": best[1],
                "mean_reward_change": mean[0],
                "mean_reward_ci95": mean[1],
            }
        )
    return changes


EARLIER = "earlier"
"""A run folder's record of the runs it was carried from: ``earlier/<head>/`` with their ledger and verify key."""


def carry(run_dir: Path, out: Path) -> list[str]:
    """Write ``out``: what continues ``run_dir`` in a fresh folder; returns what was left behind, one line each.

    Carried: each round whose version is made and recorded (its ``results.jsonl``), the teacher's versions with
    their adapters (``teacher/``), and the run's ledger, head file and public verify key (with which the
    verdicts' signatures can be checked) under ``earlier/<last entry's hash>/``, beside any earlier ones the run
    holds itself. Not carried: the keys' secret halves, the candidates' adapters, and a round under way, whose
    finished contexts cite verdicts in this run's ledger, which the continued run's auditor cannot hold: that
    round is redone there. Refused (:class:`CarryError`), with nothing written: a live run (its auditor holds
    the ledger's writer lock), a version made but not yet recorded (rerun the command on this folder first), an
    ``out`` that exists. ``out`` is written beside itself, then renamed: it is whole or absent.
    """
    if out.exists():
        raise CarryError(f"{out} exists: carry into a new folder")
    config = run_config(run_dir)
    ledger, verify_key = run_dir / "ledger.jsonl", run_dir / "keys" / "auditor.sign.pub"
    missing = [p for p in (ledger, head_path_for(ledger), verify_key, run_dir / "teacher") if not p.exists()]
    if missing:
        raise CarryError(f"{run_dir} has no {', '.join(p.name for p in missing)}: has its auditor ever run there?")
    try:
        lock = WriterLock(ledger)
    except LedgerError as exc:
        raise CarryError(f"{run_dir} is running: {exc}") from None
    try:
        rounds, left = _finished_rounds(run_dir, config.restem.rounds)
        building = out.with_name(out.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        for r in rounds:
            (building / f"round-{r}").mkdir(parents=True)
            shutil.copyfile(run_dir / f"round-{r}" / "results.jsonl", building / f"round-{r}" / "results.jsonl")
        shutil.copytree(run_dir / "teacher", building / "teacher")
        if (run_dir / EARLIER).is_dir():
            shutil.copytree(run_dir / EARLIER, building / EARLIER)
        record = building / EARLIER / read_entries(ledger)[-1]["hash"][:16]
        record.mkdir(parents=True)
        for source in (ledger, head_path_for(ledger), verify_key):
            shutil.copyfile(source, record / source.name)
        building.rename(out)
    finally:
        lock.release()
    return left


class CarryError(Exception):
    """A run folder that cannot be carried as it is; the message says why and what to do."""


def _finished_rounds(run_dir: Path, rounds: int) -> tuple[list[int], list[str]]:
    """The rounds to carry (begun, and their version made and recorded), and a line for a round under way."""
    book = VersionBook(run_dir)
    done = []
    for r in range(rounds):
        results = run_dir / f"round-{r}" / "results.jsonl"
        if not results.is_file():
            break
        made = book.made_in(r)
        if made is None:
            return done, [f"round {r} is under way: its {len(load_outcomes(results))} finished contexts are redone"]
        if made.ledger_entry is None and made.kind != "base":
            raise CarryError(f"{made.version} is made but not recorded: rerun the command on {run_dir} first")
        done.append(r)
    return done, []


def _entry_ledgers(run_dir: Path) -> dict[str, str]:
    """Entry hash -> the ledger holding it (relative: ``ledger.jsonl`` or ``earlier/<x>/ledger.jsonl``)."""
    found = {}
    for ledger in [run_dir / "ledger.jsonl", *sorted((run_dir / EARLIER).glob("*/ledger.jsonl"))]:
        if ledger.is_file():
            found |= {e["hash"]: ledger.relative_to(run_dir).as_posix() for e in read_entries(ledger)}
    return found


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
    if summary["round_changes"]:
        lines += [
            "",
            "| round against round | sampled by | contexts in both | best reward change ± 95% | "
            "mean reward change ± 95% |",
            "|---|---|---:|---:|---:|",
        ]
    for c in summary["round_changes"]:
        lines.append(
            f"| {c['round']} against {c['against']} | {c['sampled_by']} against {c['against_sampled_by']} "
            f"| {c['contexts']} | {c['best_reward_change']:+.3f} ± {c['best_reward_ci95']:.3f} "
            f"| {c['mean_reward_change']:+.3f} ± {c['mean_reward_ci95']:.3f} |"
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
        try:
            left = carry(args.run_dir, args.out / "carry")
        except CarryError as exc:
            print(f"not carried: {exc}", file=sys.stderr)
            return 2
        for line in left:
            print(f"not carried: {line}")
        print(f"carried to {args.out / 'carry'}: copy it to a new run folder and rerun the same command there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
