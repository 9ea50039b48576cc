"""How noisy a self-edit's reward is: the same samples trained on two student seeds, their gains compared.

Run, after two ``bench.self_edit_formats`` runs over the same samples (the second one's ``--out`` given a copy of
the first one's ``self_edits.jsonl``, so nothing is sampled again) with ``--seed 0`` and ``--seed 1``:

    python -m bench.reward_noise RUN0/records.jsonl RUN1/records.jsonl --out bench/results/self_edit_formats/seed1

A sample's reward is ReST^EM's: its gold log-likelihood gain over the passage alone, trained on the same seed.
Per arm: the correlation of the two seeds' rewards, the spread of their difference against the spread of the
rewards themselves (noise against signal), and how often the best of a passage's samples is the same sample on
both seeds (what the E-step keeps); and how often a sample's answer-recall gain keeps its sign.
Results: ``reward_noise.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from bench.results_files import command_line, write_results
from bench.self_edit_formats import PASSAGE_ONLY
from library.jsonl import read_jsonl

Key = tuple[str, str, int]  # (context id, arm, sample)


def rewards(path: Path) -> dict[Key, tuple[float, float]]:
    """Each sample's (log-likelihood gain, answer-recall gain) over the passage alone of the same run."""
    rows = list(read_jsonl(path))
    passage = {r["context_id"]: r for r in rows if r["arm"] == PASSAGE_ONLY}
    return {
        (r["context_id"], r["arm"], r["sample"]): (
            r["loglik"] - passage[r["context_id"]]["loglik"],
            r["answer_recall"] - passage[r["context_id"]]["answer_recall"],
        )
        for r in rows
        if r["arm"] != PASSAGE_ONLY
    }


def compare(first: dict[Key, tuple[float, float]], second: dict[Key, tuple[float, float]]) -> list[dict[str, Any]]:
    """One row per arm (and one for all): agreement of the two seeds' rewards on the samples both scored."""
    keys = sorted(set(first) & set(second))
    rows = []
    for arm in [*sorted({k[1] for k in keys}), "all"]:
        chosen = [k for k in keys if arm in ("all", k[1])]
        x, y = [first[k][0] for k in chosen], [second[k][0] for k in chosen]
        by_passage: dict[tuple[str, str], list[Key]] = {}
        for k in chosen:
            by_passage.setdefault((k[0], k[1]), []).append(k)
        same_best = sum(
            max(ks, key=lambda k: first[k][0]) == max(ks, key=lambda k: second[k][0]) for ks in by_passage.values()
        )
        recall_x, recall_y = [first[k][1] for k in chosen], [second[k][1] for k in chosen]
        rows.append(
            {
                "arm": arm,
                "samples": len(chosen),
                "loglik_r": statistics.correlation(x, y),
                "mean_first": statistics.fmean(x),
                "mean_second": statistics.fmean(y),
                "sd_difference": statistics.stdev(b - a for a, b in zip(x, y, strict=True)),
                "sd_reward": statistics.stdev(x),
                "same_best": same_best,
                "passages": len(by_passage),
                "recall_same_sign": sum(_sign(a) == _sign(b) for a, b in zip(recall_x, recall_y, strict=True)),
            }
        )
    return rows


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """The table, with the command that made it."""
    lines = [
        "# Reward noise across student seeds: the same self-edits, trained twice",
        "",
        f"`{command}`",
        "",
        "Reward: a sample's gold log-likelihood gain over the passage alone (nats/token), each seed against its own "
        "passage-alone adapter.",
        "",
        "| arm | samples | r (seed 0, seed 1) | mean reward, seed 0 | seed 1 | sd of the difference | sd of the "
        "rewards | same best sample per passage | answer-recall gain, same sign |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['arm']} | {r['samples']} | {r['loglik_r']:.2f} | {r['mean_first']:+.3f} | {r['mean_second']:+.3f} | "
        f"{r['sd_difference']:.3f} | {r['sd_reward']:.3f} | {r['same_best']}/{r['passages']} | "
        f"{r['recall_same_sign']}/{r['samples']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Compare the two runs' rewards and write the table to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="records.jsonl of the first seed's run.")
    parser.add_argument("second", type=Path, help="records.jsonl of the second seed's run, on the same samples.")
    parser.add_argument("--out", type=Path, required=True, help="Results folder.")
    args = parser.parse_args(argv)
    rows = compare(rewards(args.first), rewards(args.second))
    command = command_line("bench.reward_noise", argv)
    write_results(args.out, "reward_noise", {"command": command, "rows": rows}, markdown(rows, command))
    return rows


if __name__ == "__main__":
    main()
