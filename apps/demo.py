"""``seal demo``: teacher, student and auditor as three OS processes over ZeroMQ on loopback.

Run: ``seal demo`` (the embedded default model, the built-in fictional documents); ``seal demo --auto-promote``
also promotes each document's best accepted adapter before the student stops (:mod:`apps.auto_promote`).
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console

from apps.auto_promote import promote_after_pass
from apps.cli_config import config_error
from apps.processes import ProcessFailed, ProcessGroup, free_tcp_ports
from apps.sequential_promote import PROMOTIONS_FILE, promote_while_teaching
from auditor.config import AuditorConfig
from auditor.judge_metric import JudgeConfig
from library.ledger import verify_ledger
from library.model_specs import DEFAULT_MODEL, DTypeName
from library.models import resolve_model
from protocol.messages import Metric, TrainConfig
from protocol.security import create_role_keys
from protocol.signing import create_signing_key
from student.config import StudentConfig
from teacher.backend_spec import check_backend
from teacher.config import TeacherConfig
from teacher.restem_config import RestemConfig


@dataclass
class LaunchConfig:
    """What a ``seal demo`` or ``seal train-teacher`` run varies; everything else keeps each role's defaults."""

    run_dir: Path
    model: str = DEFAULT_MODEL
    teacher_model: str | None = None  # a teacher spec (teacher.backend_spec); None: the student's model
    teacher_base_url: str | None = None
    device: str = "auto"
    dtype: DTypeName = "auto"
    threads: int | None = None  # torch CPU threads per role; None: torch's choice
    workers: int = 1  # Ray workers of the student and of the auditor; 1: in process, no Ray
    ray_address: str | None = None  # join this Ray cluster; None: each role starts a local runtime
    data: Path | None = None
    limit: int | None = None
    per_title: int | None = None  # at most this many passages of each title of --data
    k: int = 1
    metric: Metric = "loglik"
    judge: JudgeConfig | None = None  # the auditor's LLM judge (metric "judge")
    min_gain: float = 0.05
    train: dict[str, Any] = field(default_factory=dict)  # student settings given (--epochs ...); the rest its defaults
    max_retention_drop: float | None = None  # the auditor's retention limit; None: its default
    restem: RestemConfig | None = None  # the teacher's ReST^EM rounds; None: one adaptation pass
    auditor_settings: dict[str, Any] = field(default_factory=dict)  # more auditor settings (seal adapt: documents)
    teacher_settings: dict[str, Any] = field(default_factory=dict)  # more teacher settings (--format ...)
    ready_timeout_s: float = 600.0
    auto_promote: bool = False  # after the pass, promote each context's best accepted adapter (apps.auto_promote)
    promote_each: bool = False  # after each context, promote its best accepted adapter (apps.sequential_promote)
    rehearsal: int = 0  # the teacher's rehearsal sample per candidate (teacher --rehearsal)


@dataclass(frozen=True)
class RoleConfigs:
    """The three roles' configurations, as each role process will read them."""

    student: StudentConfig
    auditor: AuditorConfig
    teacher: TeacherConfig


def role_configs(opts: LaunchConfig) -> RoleConfigs:
    """Each role's config object; a value that does not validate is one ConfigError naming the setting."""
    store, ledger = opts.run_dir / "store", opts.run_dir / "ledger.jsonl"
    placement: dict[str, Any] = {"device": opts.device, "dtype": opts.dtype}
    workers: dict[str, Any] = {"workers": opts.workers, "ray_address": opts.ray_address}
    if opts.threads:
        workers["threads_per_worker"] = opts.threads
    corpus: dict[str, Any] = {"data": opts.data, "limit": opts.limit, "per_title": opts.per_title}
    retention = {} if opts.max_retention_drop is None else {"max_retention_drop": opts.max_retention_drop}
    teacher_spec = opts.teacher_model or opts.model
    try:
        train = TrainConfig(**opts.train)
        return RoleConfigs(
            student=StudentConfig(model=opts.model, store=store, train=train, **placement, **workers),
            auditor=AuditorConfig(
                model=opts.model,
                store=store,
                ledger=ledger,
                metric=opts.metric,
                judge=opts.judge,
                min_gain=opts.min_gain,
                **retention,
                **corpus,
                **placement,
                **workers,
                **opts.auditor_settings,
            ),
            teacher=TeacherConfig(
                model=teacher_spec,
                base_url=opts.teacher_base_url,
                run_dir=opts.run_dir,
                k=opts.k,
                ready_timeout_s=opts.ready_timeout_s,
                restem=opts.restem or RestemConfig(),
                rehearsal=opts.rehearsal,
                promotion_log=opts.run_dir / PROMOTIONS_FILE if opts.promote_each else None,
                **opts.teacher_settings,
                **corpus,
                **placement,
            ),
        )
    except ValidationError as exc:  # e.g. a spec naming no known backend, or a base URL for a local teacher
        raise config_error(exc) from None


def write_role_configs(configs: RoleConfigs, folder: Path) -> dict[str, Path]:
    """Each role's config as a YAML file (what its ``--config`` reads), so the run folder says how it ran."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in ("student", "auditor", "teacher"):
        config: BaseModel = getattr(configs, role)
        paths[role] = folder / f"{role}.yaml"
        paths[role].write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return paths


def role_commands(opts: LaunchConfig, files: dict[str, Path], student_ep: str, auditor_ep: str) -> dict[str, list[str]]:
    """Each role's command line: its config file, its endpoints, the key folder and the threads."""
    threads = ["--threads", str(opts.threads)] if opts.threads else []
    common = ["--keys", str(opts.run_dir / "keys"), *threads]
    seal = [sys.executable, "-m", "apps"]
    return {
        "student": [*seal, "student", "--config", str(files["student"]), "--bind", student_ep, *common],
        "auditor": [
            *seal,
            "auditor",
            "--config",
            str(files["auditor"]),
            "--bind",
            auditor_ep,
            "--student",
            student_ep,
            *common,
        ],
        "teacher": [
            *seal,
            "teacher",
            "--config",
            str(files["teacher"]),
            "--student",
            student_ep,
            "--auditor",
            auditor_ep,
            *common,
        ],
    }


def run_demo(opts: LaunchConfig, console: Console | None = None, title: str = "seal demo") -> int:
    """Start the three roles, wait for the teacher's pass (or rounds) to finish, verify the ledger.

    With ``opts.auto_promote``, the best accepted adapter of each context is promoted before the student stops.
    """
    console = console or Console()
    started = time.perf_counter()
    console.print(f"[bold]{title}[/] · run folder {opts.run_dir}")
    resolve_model(opts.model)  # convert once here, not in three processes at the same time
    configs = role_configs(opts)
    check_backend(configs.teacher)  # fail in one line before any role starts (key, server, model, vllm)
    files = write_role_configs(configs, opts.run_dir / "config")
    keys = opts.run_dir / "keys"
    create_role_keys(keys)
    create_signing_key(keys)
    ports = free_tcp_ports(2)
    student_ep = f"tcp://127.0.0.1:{ports[0]}"
    commands = role_commands(opts, files, student_ep, f"tcp://127.0.0.1:{ports[1]}")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that leaving the block stops the three roles
    with ProcessGroup() as group:
        group.spawn("student", commands["student"], opts.run_dir / "student.log")
        group.spawn("auditor", commands["auditor"], opts.run_dir / "auditor.log")
        group.spawn("teacher", commands["teacher"])
        try:
            if opts.promote_each:  # the launcher holds the CLI's key: it promotes between the teacher's contexts
                code, promoted = promote_while_teaching(group, opts.run_dir, student_ep, console, opts.ready_timeout_s)
            else:
                code, promoted = group.wait_for("teacher"), True
        except ProcessFailed as exc:
            console.print(f"[red]demo failed:[/] {exc}")
            return 1
        if not promoted:
            code = code or 1
        if opts.auto_promote and code == 0 and not promote_after_pass(opts.run_dir, student_ep, console):
            code = 1  # while the student still runs: the launcher holds the CLI's key
    report = verify_ledger(opts.run_dir / "ledger.jsonl")
    status = "[green]verified[/]" if report.ok else "[red]FAILED[/] " + "; ".join(report.problems)
    console.print(f"ledger {opts.run_dir / 'ledger.jsonl'}: {report.entries} entries, {status}")
    console.print(f"{title} wall time {time.perf_counter() - started:.0f} s; logs in {opts.run_dir}")
    return code if report.ok else 1


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(143)
