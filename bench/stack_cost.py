"""What a served stack of N adapters costs, stacked (every adapter active at once) against merged into the base.

Run (a minute or two on 2 CPU cores with the embedded SmolLM2-135M-Instruct):

    python -m bench.stack_cost --threads 1 --depths 1 4 8

Adapters of the student's default shape (r=32, all linear layers) with random weights stand in for accepted
ones (speed does not depend on what they learned). Per depth N: the CPU seconds (on a shared machine the
work, not the waiting) of one forward pass over a batch (``--batch`` rows of ``--tokens`` tokens) of the
base model, of peft with the N adapters active (what ``seal serve`` and the shadow answer with), and of the
base with the N merged in (:func:`library.merged_stack.merged_stack`, what continual training and judging
run on), plus the time to merge and restore. Results: ``bench/results/stack_cost.md`` and ``.json``, with
the exact command.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import PreTrainedModel

from bench.results_files import command_line, write_results
from library.lora import adapters_loaded, finish_adapter_config, lora_config
from library.merged_stack import merged_stack
from library.model_specs import DEFAULT_MODEL
from library.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Base model.")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 8], help="Stack depths N to time.")
    parser.add_argument("--batch", type=int, default=8, help="Rows per forward pass.")
    parser.add_argument("--tokens", type=int, default=64, help="Tokens per row.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed forward passes per setting (median kept).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="Results folder.")
    return parser.parse_args(argv)


def random_adapters(model: PreTrainedModel, model_spec: str, count: int, folder: Path) -> list[Path]:
    """``count`` peft LoRA folders of the student's default shape, with small random A and B."""
    folders = []
    for i in range(count):
        torch.manual_seed(i)
        peft_model = get_peft_model(model, lora_config(32, 64.0, "all-linear", model_spec))
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 1e-3)
        out = folder / f"adapter-{i}"
        peft_model.save_pretrained(out)
        finish_adapter_config(out, model_spec)
        peft_model.unload()
        folders.append(out)
    return folders


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    """Median CPU time of ``run`` over ``repeats`` calls, after one warm-up call.

    CPU time of this process, not wall time: on a shared machine it counts the work, not the waiting.
    """
    run()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return statistics.median(times)


@torch.no_grad()
def measure(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """One row per depth: forward times of base, peft stack and merged stack, and the merge's time."""
    model, _ = load_model(args.model)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens))
    forward = lambda m: m(input_ids=ids, use_cache=False, logits_to_keep=1)  # noqa: E731
    base_s = median_seconds(lambda: forward(model), args.repeats)
    folders = random_adapters(model, args.model, max(args.depths), scratch)
    rows = []
    for depth in args.depths:
        stack = folders[:depth]
        with adapters_loaded(model, {f.name: f for f in stack}) as peft_model:
            peft_model.base_model.set_adapter([f.name for f in stack])
            stacked_s = median_seconds(lambda: forward(peft_model), args.repeats)
        started = time.process_time()
        with merged_stack(model, stack):
            merge_s = time.process_time() - started
            merged_s = median_seconds(lambda: forward(model), args.repeats)
            started = time.process_time()
        restore_s = time.process_time() - started
        rows.append(
            {
                "depth": depth,
                "base_forward_s": round(base_s, 4),
                "stacked_forward_s": round(stacked_s, 4),
                "merged_forward_s": round(merged_s, 4),
                "merge_s": round(merge_s, 3),
                "restore_s": round(restore_s, 3),
            }
        )
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], command: str, args: argparse.Namespace) -> str:
    """The results table with its command."""
    lines = [
        "# A served stack: adapters stacked (peft, all active) against merged into the base",
        "",
        f"`{command}`",
        "",
        f"CPU seconds of one forward pass over {args.batch} rows of {args.tokens} tokens (median of {args.repeats}); "
        "adapters r=32 on every linear layer.",
        "",
        "| adapters | base (s) | stacked (s) | stacked / base | merged (s) | merge (s) | restore (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["stacked_forward_s"] / r["base_forward_s"]
        lines.append(
            f"| {r['depth']} | {r['base_forward_s']:.3f} | {r['stacked_forward_s']:.3f} | {ratio:.2f} | "
            f"{r['merged_forward_s']:.3f} | {r['merge_s']:.2f} | {r['restore_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = command_line("bench.stack_cost", argv)
    with tempfile.TemporaryDirectory(prefix="stack-cost-") as scratch:
        rows = measure(args, Path(scratch))
    write_results(args.out, "stack_cost", {"command": command, "rows": rows}, markdown(rows, command.strip(), args))


if __name__ == "__main__":
    main()
