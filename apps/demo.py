"""``seal demo``: teacher, student and auditor as three OS processes over ZeroMQ on loopback.

Run: ``seal demo`` (the embedded default model, the built-in fictional documents).
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from apps.cli_config import ConfigError
from apps.processes import ProcessFailed, ProcessGroup, free_tcp_ports
from library.ledger import verify_ledger
from library.models import DEFAULT_MODEL, resolve_model
from protocol.security import create_role_keys
from protocol.signing import create_signing_key


@dataclass
class LaunchConfig:
    """What a demo run varies; everything else keeps each role's defaults."""

    run_dir: Path
    model: str = DEFAULT_MODEL
    teacher_model: str | None = None  # a teacher spec (teacher.backend_spec); None: the student's model
    teacher_base_url: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None  # torch CPU threads per role; None: torch's choice
    data: Path | None = None
    limit: int | None = None
    k: int = 1
    metric: str = "loglik"
    min_gain: float = 0.05
    ready_timeout_s: float = 600.0
    extra: dict[str, list[str]] = field(default_factory=dict)  # more flags per role, e.g. ReST^EM's for the teacher


def role_commands(opts: LaunchConfig, student_ep: str, auditor_ep: str) -> dict[str, list[str]]:
    """The ``seal`` command line of each role, as a user would type it."""
    seal = [sys.executable, "-m", "apps"]
    store, ledger = str(opts.run_dir / "store"), str(opts.run_dir / "ledger.jsonl")
    keys = ["--keys", str(opts.run_dir / "keys")]
    data = ["--data", str(opts.data)] if opts.data else []
    limit = ["--limit", str(opts.limit)] if opts.limit is not None else []
    base_url = ["--base-url", opts.teacher_base_url] if opts.teacher_base_url else []
    threads = ["--threads", str(opts.threads)] if opts.threads else []
    common = ["--device", opts.device, "--dtype", opts.dtype, *threads, *keys]
    commands = {
        "student": [*seal, "student", "--bind", student_ep, "--model", opts.model, "--store", store, *common],
        "auditor": [
            *seal,
            "auditor",
            "--bind",
            auditor_ep,
            "--student",
            student_ep,
            "--model",
            opts.model,
            "--store",
            store,
            "--ledger",
            ledger,
            "--metric",
            opts.metric,
            "--min-gain",
            str(opts.min_gain),
            *data,
            *limit,
            *common,
        ],
        "teacher": [
            *seal,
            "teacher",
            "--student",
            student_ep,
            "--auditor",
            auditor_ep,
            "--model",
            opts.teacher_model or opts.model,
            "--run-dir",
            str(opts.run_dir),
            "--k",
            str(opts.k),
            "--ready-timeout-s",
            str(opts.ready_timeout_s),
            *base_url,
            *data,
            *limit,
            *common,
        ],
    }
    return {role: [*command, *opts.extra.get(role, [])] for role, command in commands.items()}


def run_demo(opts: LaunchConfig, console: Console | None = None, title: str = "seal demo") -> int:
    """Start the three roles, wait for the teacher's pass (or rounds) to finish, verify the ledger."""
    console = console or Console()
    started = time.perf_counter()
    console.print(f"[bold]{title}[/] · run folder {opts.run_dir}")
    resolve_model(opts.model)  # convert once here, not in three processes at the same time
    check_teacher(opts)
    keys = opts.run_dir / "keys"
    create_role_keys(keys)
    create_signing_key(keys)
    ports = free_tcp_ports(2)
    commands = role_commands(opts, f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that leaving the block stops the three roles
    with ProcessGroup() as group:
        group.spawn("student", commands["student"], opts.run_dir / "student.log")
        group.spawn("auditor", commands["auditor"], opts.run_dir / "auditor.log")
        group.spawn("teacher", commands["teacher"])
        try:
            code = group.wait_for("teacher")
        except ProcessFailed as exc:
            console.print(f"[red]demo failed:[/] {exc}")
            return 1
    report = verify_ledger(opts.run_dir / "ledger.jsonl")
    status = "[green]verified[/]" if report.ok else "[red]FAILED[/] " + "; ".join(report.problems)
    console.print(f"ledger {opts.run_dir / 'ledger.jsonl'}: {report.entries} entries, {status}")
    console.print(f"{title} wall time {time.perf_counter() - started:.0f} s; logs in {opts.run_dir}")
    return code if report.ok else 1


def check_teacher(opts: LaunchConfig) -> None:
    """Fail in one line before any role starts when the teacher cannot work (key, server, model, vllm)."""
    from teacher.backend_spec import check_backend
    from teacher.config import TeacherConfig

    spec = opts.teacher_model or opts.model
    try:
        config = TeacherConfig(model=spec, base_url=opts.teacher_base_url)
    except ValidationError as exc:  # a spec naming no known backend, or a base URL for a local teacher
        raise ConfigError(f"--teacher {spec}: {exc.errors()[0]['msg']}") from None
    check_backend(config)


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(143)
