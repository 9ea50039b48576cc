"""The ``seal adapt`` command line: PATHs and every :class:`apps.adapt_config.AdaptConfig` setting as a flag."""

from __future__ import annotations

import argparse
import json

from apps.adapt_config import AdaptConfig
from apps.cli_config import add_config_arguments, add_threads_argument, build_config


def add_adapt_command(sub: argparse._SubParsersAction) -> None:
    """Add ``seal adapt PATH... [flags]`` to the command tree."""
    adapt = sub.add_parser(
        "adapt", help="Adapt the student to your documents (Markdown, text, HTML, PDF), τ written by the auditor."
    )
    adapt.add_argument("paths", nargs="+", metavar="PATH", help="Document files or folders.")
    adapt.add_argument("--config", help="YAML file of settings; flags override it.")
    add_threads_argument(adapt)
    add_config_arguments(adapt, AdaptConfig)


def run_adapt_command(args: argparse.Namespace) -> int:
    """Build the settings (the PATHs fill --documents.paths) and run ``seal adapt``."""
    from apps.adapt import run_adapt

    setattr(args, "cfg:documents.paths", json.dumps(args.paths))
    return run_adapt(build_config(AdaptConfig, args), args.threads)
