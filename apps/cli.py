"""The ``seal`` command: one subcommand per role, plus the demo and the ledger tools.

seal demo                                   # three processes, built-in documents, embedded model
seal student --bind tcp://0.0.0.0:5555      # each role alone, for a deployment across hosts
seal auditor --bind tcp://0.0.0.0:5556 --student tcp://student:5555
seal teacher --student tcp://student:5555 --auditor tcp://auditor:5556
seal train-teacher --data squad.json --rounds 2 --k 5   # ReST^EM, three processes on loopback
seal adapt docs/ --run-dir runs/docs        # your documents, τ written by the auditor; a rerun updates
seal ledger verify --ledger runs/demo/ledger.jsonl
seal bench fewshot --out bench/results/fewshot   # ARC: in-context, TTT, ReST^EM, oracle
seal serve --run-dir runs/demo-<time>       # OpenAI-compatible endpoint over the served (audited) stack
seal ask --run-dir runs/demo-<time> "Who founded Ostrevane?"
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, get_args

from apps.adapt_cli import add_adapt_command, run_adapt_command
from apps.bench_cli import add_bench_commands, run_bench
from apps.cli_config import (
    ConfigError,
    add_config_arguments,
    add_student_training_arguments,
    add_teacher_writing_arguments,
    add_threads_argument,
    apply_threads,
    build_config,
    student_training,
    teacher_writing,
    validate_config,
)
from apps.fewshot_cli import add_fewshot_commands, add_fewshot_launch_arguments, run_fewshot_role
from apps.governance_cli import add_governance_commands, add_security_args, keys_folder, run_governance
from apps.judge_cli import add_judge_arguments, judge_from_args
from apps.serve_cli import add_serve_commands, run_serve_command
from apps.tracking_cli import add_mlflow_argument, add_tracking_commands, mirror_after_run, run_tracking
from auditor.config import AuditorConfig
from library.model_specs import DTYPE_CHOICES
from protocol.messages import Metric
from student.config import StudentConfig
from teacher.config import TeacherConfig

METRIC_CHOICES = get_args(Metric)
DEFAULT_STUDENT = "tcp://127.0.0.1:5555"
DEFAULT_AUDITOR = "tcp://127.0.0.1:5556"

DTYPE_HELP = "Weights' dtype for every role: auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16."


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also read by the test that checks compose.yaml)."""
    parser = argparse.ArgumentParser(prog="seal", description="Self-adapting language models, audited.")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default: INFO).")
    sub = parser.add_subparsers(dest="command", required=True)

    student = sub.add_parser("student", help="Serve the student: trains candidates, answers questions.")
    student.add_argument(
        "--bind", default=DEFAULT_STUDENT, help=f"ZeroMQ endpoint to bind (default: {DEFAULT_STUDENT})."
    )
    _config_args(student, StudentConfig)

    auditor = sub.add_parser("auditor", help="Serve the auditor: judges candidates, keeps the ledger.")
    auditor.add_argument(
        "--bind", default=DEFAULT_AUDITOR, help=f"ZeroMQ endpoint to bind (default: {DEFAULT_AUDITOR})."
    )
    auditor.add_argument("--student", default=DEFAULT_STUDENT, help="The student's endpoint.")
    _config_args(auditor, AuditorConfig)

    teacher = sub.add_parser("teacher", help="Run the teacher's adaptation pass against a student and an auditor.")
    teacher.add_argument("--student", default=DEFAULT_STUDENT, help="The student's endpoint.")
    teacher.add_argument("--auditor", default=DEFAULT_AUDITOR, help="The auditor's endpoint.")
    _config_args(teacher, TeacherConfig)

    demo = sub.add_parser("demo", help="Teacher, student and auditor as three processes on loopback.")
    demo.add_argument("--run-dir", type=Path, help="Run folder (default: runs/demo-<time>); an existing one resumes.")
    demo.add_argument("--model", default=None, help="Student (and teacher) model (default: the embedded SmolLM2).")
    demo.add_argument(
        "--teacher",
        "--teacher-model",
        dest="teacher",
        default=None,
        metavar="SPEC",
        help="Teacher: [transformers:|vllm:|openai:|anthropic:]MODEL (default: the student's model, on transformers).",
    )
    demo.add_argument("--teacher-base-url", default=None, help="API base URL for an openai: or anthropic: teacher.")
    demo.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'.")
    demo.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    add_threads_argument(demo)
    add_workers_arguments(demo)
    demo.add_argument("--data", type=Path, help="SQuAD-format file instead of the built-in documents.")
    demo.add_argument("--limit", type=int, help="Use only the first N documents.")
    demo.add_argument("--per-title", type=int, help="At most N passages of each title, before --limit (default: all).")
    demo.add_argument("--k", type=int, default=1, help="Self-edits per document (default: 1).")
    add_teacher_writing_arguments(demo)
    demo.add_argument("--metric", default="loglik", choices=METRIC_CHOICES, help="Reward metric.")
    demo.add_argument("--min-gain", type=float, default=0.05, help="Smallest gain the auditor accepts.")
    add_judge_arguments(demo)
    add_student_training_arguments(demo)
    demo.add_argument("--probes", type=Path, default=None, help="Auditor's protected-probes file (default: built-in).")
    demo.add_argument(
        "--probe-answers-may-lose",
        type=int,
        default=None,
        metavar="N",
        help="Answer probes a candidate may stop answering right before they veto it "
        f"(default: {AuditorConfig().probe_answers_may_lose}).",
    )
    demo.add_argument("--max-retention-drop", type=float, default=None, help="Auditor's retention limit (default 1.0).")
    _add_auto_promote(demo)
    add_fewshot_launch_arguments(demo)

    _add_train_teacher(sub)
    add_adapt_command(sub)
    add_fewshot_commands(sub)
    add_governance_commands(sub)
    add_bench_commands(sub)
    add_serve_commands(sub)
    add_tracking_commands(sub)

    models = sub.add_parser("models", help="Prepare a model (convert the embedded default once).")
    models.add_argument("spec", nargs="?", default=None, help="Model spec (default: the embedded SmolLM2).")
    return parser


def _add_train_teacher(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train-teacher", help="ReST^EM: rounds of self-edits, rewards from the auditor, teacher fine-tuning."
    )
    train.add_argument("--data", type=Path, required=True, help="SQuAD-format file of training passages.")
    train.add_argument(
        "--run-dir", type=Path, help="Run folder (default: runs/restem-<time>); an existing one resumes."
    )
    train.add_argument("--model", default=None, help="Student (and teacher) model (default: the embedded SmolLM2).")
    train.add_argument("--teacher", default=None, metavar="SPEC", help="Teacher spec (default: the student's model).")
    train.add_argument("--teacher-base-url", default=None, help="API base URL for an openai: or anthropic: teacher.")
    train.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'.")
    train.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    add_threads_argument(train)
    add_workers_arguments(train)
    train.add_argument("--limit", type=int, help="Use only the first N passages.")
    train.add_argument("--per-title", type=int, help="At most N passages of each title, before --limit (default: all).")
    train.add_argument("--rounds", type=int, default=2, help="ReST^EM rounds (default: 2).")
    train.add_argument("--k", type=int, default=5, help="Self-edits sampled per passage and round (default: 5).")
    add_teacher_writing_arguments(train)
    train.add_argument("--repeats", type=int, default=1, help="Trainings per self-edit; reward = their mean.")
    train.add_argument("--metric", default="loglik", choices=METRIC_CHOICES, help="Reward metric.")
    add_judge_arguments(train)
    train.add_argument("--min-reward", type=float, default=0.0, help="Keep only self-edits rewarded above this.")
    add_student_training_arguments(train)
    train.add_argument("--sft-epochs", type=int, default=None, help="Teacher fine-tuning epochs (default: 3).")
    _add_auto_promote(train)
    add_mlflow_argument(train)
    add_fewshot_launch_arguments(train)


def _add_auto_promote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--auto-promote",
        action="store_true",
        help="After the pass, promote each context's best accepted adapter (highest reward) as 'seal promote' "
        "does; they stack.",
    )


def add_workers_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers N`` and ``--ray-address ADDR`` of a launcher: for the student and the auditor it starts."""
    parser.add_argument(
        "--workers", type=int, default=1, help="Ray workers of the student and of the auditor (default 1: no Ray)."
    )
    parser.add_argument("--ray-address", default=None, help="Join this Ray cluster (default: local runtimes).")


def _config_args(parser: argparse.ArgumentParser, model: type) -> None:
    add_security_args(parser)
    parser.add_argument("--config", help="YAML file of settings; flags override it.")
    add_threads_argument(parser)
    add_config_arguments(parser, model)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``seal`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return _dispatch(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for the user errors every role can hit
        if not _is_user_error(exc):
            raise
        print(f"seal {args.command}: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int | None:
    from apps import roles

    if args.command in ("student", "auditor", "teacher"):
        apply_threads(args.threads)
    if args.command == "student":
        roles.run_student(build_config(StudentConfig, args), args.bind, keys_folder(args))
    elif args.command == "auditor":
        roles.run_auditor(build_config(AuditorConfig, args), args.bind, args.student, keys_folder(args))
    elif args.command == "teacher":
        roles.run_teacher(build_config(TeacherConfig, args), args.student, args.auditor, keys_folder(args))
    elif args.command == "demo":
        return _demo(args)
    elif args.command == "train-teacher":
        return _train_teacher(args)
    elif args.command in ("bench", "serve", "ask", "mlflow", "adapt", "fewshot"):  # apps running the product's code
        apps = {
            "bench": run_bench,
            "serve": run_serve_command,
            "ask": run_serve_command,
            "mlflow": run_tracking,
            "adapt": run_adapt_command,
            "fewshot": run_fewshot_role,
        }
        return apps[args.command](args)
    elif args.command in ("keys", "promote", "rollback", "status", "shadow", "shadow-report", "ledger"):
        return run_governance(args)
    elif args.command == "models":
        from library.models import DEFAULT_MODEL, resolve_model

        print(resolve_model(args.spec or DEFAULT_MODEL))
    return None


def _demo(args: argparse.Namespace) -> int:
    """Teacher, student and auditor on loopback: one adaptation pass."""
    from apps.demo import LaunchConfig, run_demo

    probes = {"probes": args.probes, "probe_answers_may_lose": args.probe_answers_may_lose}
    settings = {name: value for name, value in probes.items() if value is not None}
    opts = LaunchConfig(**_launch_fields(args, "demo"), min_gain=args.min_gain, auditor_settings=settings)
    if args.domain == "fewshot":
        return _fewshot_launch(opts, args, "seal demo --domain fewshot")
    return run_demo(opts, title="seal demo")


def _train_teacher(args: argparse.Namespace) -> int:
    """The same three processes, the teacher running ReST^EM rounds."""
    from apps.demo import LaunchConfig, run_demo
    from teacher.restem_config import RestemConfig

    values = {"rounds": args.rounds, "repeats": args.repeats, "min_reward": args.min_reward}
    if args.sft_epochs is not None:
        values["sft"] = {"epochs": args.sft_epochs}
    restem = validate_config(RestemConfig, values, prefix="restem.")
    opts = LaunchConfig(**_launch_fields(args, "restem"), min_gain=0.0, restem=restem)
    if args.domain == "fewshot":
        return _fewshot_launch(opts, args, "seal train-teacher --domain fewshot")
    code = run_demo(opts, title="seal train-teacher")
    mirror_after_run(args.mlflow, opts.run_dir)  # also after a failed run: what it recorded is worth seeing
    return code


def _fewshot_launch(opts: Any, args: argparse.Namespace, title: str) -> int:
    """The few-shot roles as three processes (``--domain fewshot``), with the few-shot flags."""
    if opts.auditor_settings:  # its verdicts are exact matches on the test grids: no probes run
        flags = ", ".join("--" + name.replace("_", "-") for name in opts.auditor_settings)
        raise ConfigError(f"{title} runs no protected probes: {flags} do not apply")
    if opts.teacher_settings:  # its teacher writes training grids, not passages' self-edits
        flags = ", ".join("--" + name.replace("_", "-") for name in opts.teacher_settings)
        raise ConfigError(f"{title} writes few-shot training data, not knowledge self-edits: {flags} do not apply")
    from apps.fewshot_demo import FewShotLaunch, run_fewshot_demo
    from student.fewshot_config import FewShotStudentConfig

    limits = {"max_length": args.max_length, "max_examples": args.max_examples, "views": args.views}
    ttt = validate_config(FewShotStudentConfig, limits)
    launch = FewShotLaunch(ttt, max_attempts=args.max_attempts, structured=not args.unstructured)
    return run_fewshot_demo(opts, launch, title)


def _launch_fields(args: argparse.Namespace, run_prefix: str) -> dict[str, Any]:
    """What ``seal demo`` and ``seal train-teacher`` share, from their flags."""
    from library.model_specs import DEFAULT_MODEL

    return {
        "run_dir": args.run_dir or Path("runs") / time.strftime(f"{run_prefix}-%Y%m%d-%H%M%S"),
        "model": args.model or DEFAULT_MODEL,
        "teacher_model": args.teacher,
        "teacher_base_url": args.teacher_base_url,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "workers": args.workers,
        "ray_address": args.ray_address,
        "data": args.data,
        "limit": args.limit,
        "per_title": args.per_title,
        "k": args.k,
        "metric": args.metric,
        "judge": judge_from_args(args),
        "train": student_training(args),
        "teacher_settings": teacher_writing(args),
        "max_retention_drop": getattr(args, "max_retention_drop", None),
        "auto_promote": args.auto_promote,
    }


def _is_user_error(exc: Exception) -> bool:
    """Errors that deserve one line, not a traceback."""
    from apps.tracking import TrackingUnavailable
    from library.backend_errors import TeacherBackendError
    from library.datasets import DatasetError
    from library.ledger import LedgerError
    from library.model_specs import ModelLoadError
    from protocol.security import SecurityError
    from protocol.signing import VerdictRefused
    from protocol.transport import TransportError

    errors = (
        ConfigError,
        ModelLoadError,
        DatasetError,
        TransportError,
        LedgerError,
        SecurityError,
        VerdictRefused,
        TeacherBackendError,
        TrackingUnavailable,
    )
    return isinstance(exc, errors)


if __name__ == "__main__":
    sys.exit(main())
