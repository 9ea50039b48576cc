"""Running each role as its own process: sockets, keys and signals around each role's service."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from auditor.config import AuditorConfig
from protocol.clients import AuditorClient, StudentClient
from protocol.codec import AUDITOR_CHANNEL, STUDENT_CHANNEL, Channel
from protocol.messages import Role
from protocol.security import client_security, server_security
from protocol.signing import load_signing_key, load_verify_key
from protocol.transport import Client, Server
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
    try:
        serve(Server(bind, STUDENT_CHANNEL, "student", student.handle, security=security))
    finally:
        student.close()  # its Ray workers, if any


def run_auditor(config: AuditorConfig, bind: str, student_endpoint: str, keys: Path | None) -> None:
    """Connect to the student, load τ and the scoring model, then serve the auditor channel."""
    from auditor.service import Auditor

    link = student_client(student_endpoint, "auditor", config.student_timeout_s, keys)
    auditor = Auditor(config, link, load_signing_key(keys) if keys else None)
    security = server_security(keys, "auditor") if keys else None
    try:
        serve(Server(bind, AUDITOR_CHANNEL, "auditor", auditor.handle, security=security))
    finally:
        auditor.close()  # its Ray workers, if any


def student_client(endpoint: str, sender: Role, timeout_s: float, keys: Path | None) -> StudentClient:
    """A client of the student channel (CURVE when ``keys``), one retry after a timeout."""
    timeout_setting = "the student timeout (--train-timeout-s / --student-timeout-s)"
    return StudentClient(channel_link(endpoint, STUDENT_CHANNEL, sender, timeout_s, timeout_setting, keys))


def auditor_client(endpoint: str, timeout_s: float, keys: Path | None, sender: Role = "teacher") -> AuditorClient:
    """A client of the auditor channel (CURVE when ``keys``), one retry after a timeout."""
    return AuditorClient(channel_link(endpoint, AUDITOR_CHANNEL, sender, timeout_s, "--judge-timeout-s", keys))


def channel_link(
    endpoint: str, channel: Channel, sender: Role, timeout_s: float, timeout_setting: str, keys: Path | None
) -> Client:
    """A ZeroMQ link to ``channel``'s server (CURVE when ``keys``), one retry after a timeout."""
    security = client_security(keys, sender, channel.name) if keys else None
    return Client(
        endpoint, channel, sender, timeout_s=timeout_s, retries=1, timeout_setting=timeout_setting, security=security
    )


def run_teacher(config: TeacherConfig, student_endpoint: str, auditor_endpoint: str, keys: Path | None) -> None:
    """Build the teacher's backend (checked before any work) and its links, then run the teacher role."""
    from teacher.backend_spec import build_backend
    from teacher.service import run_teacher as run

    student = student_client(student_endpoint, "teacher", config.train_timeout_s, keys)
    auditor = auditor_client(auditor_endpoint, config.judge_timeout_s, keys)
    try:
        run(config, build_backend(config), student, auditor)
    finally:
        student.close()
        auditor.close()
