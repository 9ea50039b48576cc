"""``seal mlflow sync``: mirror a run folder (its results, teacher versions, ledger and registry) into MLflow.

seal mlflow sync --uri sqlite:///mlflow.db --run-dir runs/restem [--store STORE] [--shadow-log shadow.jsonl]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from apps.cli_config import add_config_arguments, build_config


def add_tracking_commands(sub: Any) -> None:
    """Register ``seal mlflow sync``."""
    mlflow = sub.add_parser("mlflow", help="Experiment tracking: mirror seal's records into MLflow.")
    actions = mlflow.add_subparsers(dest="mlflow_command", required=True)
    sync = actions.add_parser("sync", help="Mirror a run folder: params, metrics, artifacts, promoted adapters.")
    sync.add_argument("--run-dir", type=Path, required=True, help="The seal run folder to mirror.")
    from apps.tracking import TrackingConfig

    add_config_arguments(sync, TrackingConfig)


def add_mlflow_argument(parser: argparse.ArgumentParser) -> None:
    """``--mlflow URI`` for a launcher: mirror its run folder when it ends."""
    parser.add_argument(
        "--mlflow", metavar="URI", default=None, help="Mirror the run into MLflow at URI when it ends (seal[mlflow])."
    )


def run_tracking(args: argparse.Namespace) -> int:
    """``seal mlflow sync``."""
    from apps.tracking import TrackingConfig, mirror_run

    config = build_config(TrackingConfig, args)
    print(f"mirrored {args.run_dir} to MLflow run {mirror_run(config, args.run_dir)} at {config.uri}")
    return 0


def mirror_after_run(uri: str | None, run_dir: Path) -> None:
    """The launchers' hook: mirror ``run_dir`` into MLflow at ``uri`` (nothing when ``uri`` is None)."""
    if uri is None:
        return
    from apps.tracking import TrackingConfig, mirror_run

    print(f"mirrored {run_dir} to MLflow run {mirror_run(TrackingConfig(uri=uri), run_dir)} at {uri}")
