"""The launchers' judge flags: ``seal demo`` / ``seal train-teacher --metric judge --judge openai:MODEL``.

They configure the auditor's judge (:class:`auditor.judge_metric.JudgeConfig`) in its role config; the key
file or variable is named there, and read by the auditor process alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.judge_metric import JudgeConfig


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """``--judge SPEC``, ``--judge-base-url URL``, ``--judge-key-file FILE`` for a launcher."""
    parser.add_argument(
        "--judge", default=None, metavar="SPEC", help="LLM judge of --metric judge: openai:M or anthropic:M."
    )
    parser.add_argument("--judge-base-url", default=None, help="API base URL of the judge.")
    parser.add_argument(
        "--judge-key-file", type=Path, default=None, help="File holding the judge's API key (read by the auditor only)."
    )


def judge_from_args(args: argparse.Namespace) -> JudgeConfig | None:
    """The auditor's judge the flags name, or None."""
    if getattr(args, "judge", None) is None:
        return None
    from auditor.judge_metric import JudgeConfig

    return JudgeConfig(model=args.judge, base_url=args.judge_base_url, key_file=args.judge_key_file)
