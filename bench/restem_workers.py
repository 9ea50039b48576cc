"""One ReST^EM round with 1 and with N Ray workers (and proposing ahead): its wall time, via ``seal train-teacher``.

Run (on 2 CPU cores with the embedded SmolLM2-135M-Instruct, roughly an hour for both):

    python -m bench.restem_workers --data ../shared/data/squad/squad_train100_qwen7b_selfedits.json \\
        --limit 10 --k 5 --workers 1,2,2+ahead --threads 1

For each worker count (``N+ahead``: with the teacher sampling the next passage while the last is trained and
judged, ``--propose-ahead``), ``seal train-teacher --rounds 1`` runs as a user runs it (three
processes on loopback, the student's and auditor's work on Ray actors when there are several) in a run folder
of its own under
``--work``; a finished run is not run again (its time is kept in ``timings.jsonl``), so an interrupted bench
resumes. The table gives each run's wall time, candidates judged per hour, the ratio to the first worker count,
what the round kept, and the largest reward difference from the first run (the same seeds give the same
candidates, so it should be within the 1e-4 tolerance). Results: ``--out``/``restem_workers.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.results_files import command_line, write_results
from library.jsonl import append_jsonl, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="SQuAD-format training passages.")
    parser.add_argument("--model", default=None, help="Student (and teacher) model (default: the embedded one).")
    parser.add_argument("--limit", type=int, default=10, help="Passages in the round.")
    parser.add_argument("--k", type=int, default=5, help="Self-edits per passage.")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="Comma-separated worker counts, N+ahead for N proposing ahead; the first is the baseline.",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process.")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "restem-workers", help="Run folders (resumable).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "restem_workers", help="Results.")
    return parser.parse_args(argv)


def train_teacher_command(args: argparse.Namespace, workers: int, ahead: bool, run_dir: Path) -> list[str]:
    """``seal train-teacher`` for one round with ``workers`` workers, as a user would type it."""
    command = [sys.executable, "-m", "apps", "train-teacher", "--data", str(args.data), "--rounds", "1"]
    command += ["--limit", str(args.limit), "--k", str(args.k), "--threads", str(args.threads)]
    command += ["--workers", str(workers), "--run-dir", str(run_dir)] + (["--propose-ahead"] if ahead else [])
    return command + (["--model", args.model] if args.model else [])


def run_once(args: argparse.Namespace, workers: int, ahead: bool) -> dict[str, Any]:
    """The round with ``workers`` workers (proposing ahead or not), run now or read back from a finished run."""
    timings = args.work / "timings.jsonl"
    for record in read_jsonl(timings):
        if record["workers"] == workers and record.get("propose_ahead", False) == ahead:
            return record
    name = f"workers-{workers}" + ("-ahead" if ahead else "")
    run_dir = args.work / name
    command = train_teacher_command(args, workers, ahead, run_dir)
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    with (args.work / f"{name}.log").open("w") as log:
        code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"seal train-teacher ({name}) failed ({code}): see {log.name}")
    record = {"workers": workers, "propose_ahead": ahead, "wall_s": round(wall, 1), "run_dir": str(run_dir)}
    append_jsonl(timings, record)
    return record


def round_outcome(run_dir: Path) -> dict[str, Any]:
    """What the round judged and kept: candidates, accepted ones, rewards by self-edit."""
    verdicts = [v for record in read_jsonl(run_dir / "round-0" / "results.jsonl") for v in record["verdicts"]]
    rewards = {v["self_edit_id"]: v["reward"] for v in verdicts}
    return {"candidates": len(verdicts), "accepted": sum(v["accepted"] for v in verdicts), "rewards": rewards}


def rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per worker count (and proposing ahead), the first the baseline of the ratio and reward difference."""
    out: list[dict[str, Any]] = []
    arms = [(int(arm.removesuffix("+ahead")), arm.endswith("+ahead")) for arm in args.workers.split(",")]
    for workers, ahead in arms:
        timing = {"propose_ahead": False} | run_once(args, workers, ahead)
        outcome = round_outcome(Path(timing["run_dir"]))
        row = {**timing, **outcome, "candidates_per_hour": outcome["candidates"] / timing["wall_s"] * 3600}
        first = out[0] if out else row
        row["ratio"] = row["candidates_per_hour"] / first["candidates_per_hour"]
        shared = set(row["rewards"]) & set(first["rewards"])
        row["same_self_edits"] = len(shared)
        row["max_reward_diff"] = max((abs(row["rewards"][e] - first["rewards"][e]) for e in shared), default=None)
        out.append(row)
    return out


def markdown(table: list[dict[str, Any]], command: str) -> str:
    """The results table, with the command."""
    lines = [
        "# One ReST^EM round with Ray workers",
        "",
        f"`{command}`",
        "",
        "| workers | proposes ahead | wall s | candidates | candidates/h | ratio | accepted "
        "| self-edits shared with the first run | max reward difference |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        diff = "—" if r["max_reward_diff"] is None else f"{r['max_reward_diff']:.2e}"
        ahead = "yes" if r["propose_ahead"] else "no"
        lines.append(
            f"| {r['workers']} | {ahead} | {r['wall_s']:.0f} | {r['candidates']} | {r['candidates_per_hour']:.1f} | "
            f"{r['ratio']:.2f} | {r['accepted']} | {r['same_self_edits']} | {diff} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the rounds and write the table."""
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    command = command_line("bench.restem_workers", argv)
    table = rows(args)
    write_results(args.out, "restem_workers", {"command": command, "rows": table}, markdown(table, command.strip()))
    return table


if __name__ == "__main__":
    main()
