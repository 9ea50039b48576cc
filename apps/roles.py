"""Running each role as its own process: the bodies of ``seal student|auditor|teacher``."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from rich.console import Console

from auditor.config import AuditorConfig
from library.datasets import DEMO_DOCUMENTS, load_contexts
from protocol.codec import AUDITOR_CHANNEL, STUDENT_CHANNEL
from protocol.messages import Role
from protocol.security import client_security, server_security
from protocol.signing import load_signing_key, load_verify_key
from protocol.transport import Client, PeerUnavailable, Server
from teacher.config import TeacherConfig

log = logging.getLogger(__name__)


def serve(server: Server) -> None:
    """Serve until SIGINT or SIGTERM; the handler only flips the server's state."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    server.start()
    log.info("%s serving on %s", server.role, server.endpoint)
    server.serve()
    log.info("%s stopped", server.role)


def run_student(config, bind: str, keys: Path | None) -> None:
    """Load the student's model, then serve the student channel on ``bind`` (CURVE when ``keys``)."""
    from student.service import Student  # heavy imports only in the process that needs them

    student = Student(config, load_verify_key(keys) if keys else None)
    security = server_security(keys, "student") if keys else None
    serve(Server(bind, STUDENT_CHANNEL, "student", student.handle, security=security))


def run_auditor(config: AuditorConfig, bind: str, student_endpoint: str, keys: Path | None) -> None:
    """Connect to the student, load τ and the scoring model, then serve the auditor channel."""
    from auditor.service import Auditor

    link = student_client(student_endpoint, "auditor", config.student_timeout_s, keys)
    auditor = Auditor(config, link, load_signing_key(keys) if keys else None)
    security = server_security(keys, "auditor") if keys else None
    serve(Server(bind, AUDITOR_CHANNEL, "auditor", auditor.handle, security=security))


def student_client(endpoint: str, sender: Role, timeout_s: float, keys: Path | None) -> Client:
    """A client of the student channel (CURVE when ``keys``), one retry after a timeout."""
    timeout_setting = "the student timeout (--train-timeout-s / --student-timeout-s)"
    return _client(endpoint, "student", sender, timeout_s, timeout_setting, keys)


def auditor_client(endpoint: str, timeout_s: float, keys: Path | None, sender: Role = "teacher") -> Client:
    """A client of the auditor channel (CURVE when ``keys``), one retry after a timeout."""
    return _client(endpoint, "auditor", sender, timeout_s, "--judge-timeout-s", keys)


def _client(
    endpoint: str, server: Role, sender: Role, timeout_s: float, timeout_setting: str, keys: Path | None
) -> Client:
    channel = STUDENT_CHANNEL if server == "student" else AUDITOR_CHANNEL
    security = client_security(keys, sender, server) if keys else None
    return Client(
        endpoint, channel, sender, timeout_s=timeout_s, retries=1, timeout_setting=timeout_setting, security=security
    )


def wait_until_ready(clients: dict[str, Client], deadline_s: float) -> None:
    """Ping each peer until it answers; the error names the one that never did."""
    until = time.monotonic() + deadline_s
    for name, client in clients.items():
        while True:
            try:
                client.ping(timeout_s=2.0)
                break
            except PeerUnavailable:
                if time.monotonic() > until:
                    raise PeerUnavailable(
                        f"the {name} at {client.endpoint} did not come up within {deadline_s:.0f}s"
                    ) from None


def run_teacher(config: TeacherConfig, student_endpoint: str, auditor_endpoint: str, keys: Path | None) -> None:
    """One adaptation pass over the configured contexts, or ReST^EM rounds; prints a table at the end."""
    from teacher.backend_spec import build_backend
    from teacher.loop import run_pass
    from teacher.proposer import propose
    from teacher.report import outcomes_table, rounds_table
    from teacher.restem import run_restem

    console = Console()
    started = time.perf_counter()
    contexts = load_contexts(config.data or DEMO_DOCUMENTS, limit=config.limit)
    student = student_client(student_endpoint, "teacher", config.train_timeout_s, keys)
    auditor = auditor_client(auditor_endpoint, config.judge_timeout_s, keys)
    backend = build_backend(config)  # checks key, server, model or vllm before any work
    console.print(f"teacher {config.model} ({config.version}) ready; waiting for student and auditor")
    wait_until_ready({"student": student, "auditor": auditor}, config.ready_timeout_s)

    if config.restem.rounds:
        summaries = run_restem(backend, contexts, student, auditor, config)
        console.print(rounds_table(summaries, time.perf_counter() - started))
    else:

        def propose_for(context):
            return propose(backend, [context], config.k, config.format, config.sampling, config.version)[0]

        timeouts = (config.train_timeout_s, config.judge_timeout_s)
        outcomes = run_pass(contexts, propose_for, student, auditor, config.run_dir, timeouts)
        console.print(outcomes_table(outcomes, time.perf_counter() - started))
    student.close()
    auditor.close()
