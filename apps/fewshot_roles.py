"""Running each few-shot (ARC) role as its own process: sockets, keys and signals around its service.

As :mod:`apps.roles` for the knowledge domain, with the few-shot channels
(:data:`protocol.codec.FEWSHOT_STUDENT_CHANNEL`, :data:`protocol.codec.FEWSHOT_AUDITOR_CHANNEL`) and the
same role keys: ``seal fewshot student``, ``seal fewshot auditor``, ``seal fewshot teacher``.
"""

from __future__ import annotations

from pathlib import Path

from apps.roles import channel_link, serve
from auditor.fewshot_config import FewShotAuditorConfig
from protocol.codec import FEWSHOT_AUDITOR_CHANNEL, FEWSHOT_STUDENT_CHANNEL
from protocol.fewshot_clients import FewShotAuditorClient, FewShotStudentClient
from protocol.messages import Role
from protocol.security import server_security
from protocol.signing import load_signing_key
from protocol.transport import Server
from student.fewshot_config import FewShotStudentServiceConfig
from teacher.fewshot_config import FewShotTeacherConfig


def run_fewshot_student(config: FewShotStudentServiceConfig, bind: str, keys: Path | None) -> None:
    """Load the student's model, then serve the few-shot student channel on ``bind`` (CURVE when ``keys``)."""
    from student.fewshot_service import FewShotStudentService  # heavy imports only where needed

    student = FewShotStudentService(config)
    security = server_security(keys, "student") if keys else None
    serve(Server(bind, FEWSHOT_STUDENT_CHANNEL, "student", student.handle, security=security))


def run_fewshot_auditor(config: FewShotAuditorConfig, bind: str, student_endpoint: str, keys: Path | None) -> None:
    """Connect to the student, read the tasks and their answer grids, then serve the few-shot auditor channel."""
    from auditor.fewshot_service import FewShotAuditor

    link = fewshot_student_client(student_endpoint, "auditor", config.student_timeout_s, keys)
    auditor = FewShotAuditor(config, link, load_signing_key(keys) if keys else None)
    security = server_security(keys, "auditor") if keys else None
    serve(Server(bind, FEWSHOT_AUDITOR_CHANNEL, "auditor", auditor.handle, security=security))


def fewshot_student_client(endpoint: str, sender: Role, timeout_s: float, keys: Path | None) -> FewShotStudentClient:
    """A client of the few-shot student channel (CURVE when ``keys``)."""
    setting = "the student timeout (--train-timeout-s / --student-timeout-s)"
    return FewShotStudentClient(channel_link(endpoint, FEWSHOT_STUDENT_CHANNEL, sender, timeout_s, setting, keys))


def run_fewshot_teacher(
    config: FewShotTeacherConfig, student_endpoint: str, auditor_endpoint: str, keys: Path | None
) -> None:
    """Build the teacher's backend and its links to the few-shot student and auditor, then run the teacher."""
    from teacher.backend_spec import build_backend
    from teacher.fewshot_restem import FewShotPeers
    from teacher.fewshot_service import run_fewshot_teacher as run

    student = fewshot_student_client(student_endpoint, "teacher", config.train_timeout_s, keys)
    auditor = FewShotAuditorClient(
        channel_link(
            auditor_endpoint, FEWSHOT_AUDITOR_CHANNEL, "teacher", config.judge_timeout_s, "--judge-timeout-s", keys
        )
    )
    try:
        peers = FewShotPeers(student, auditor, config.train_timeout_s, config.judge_timeout_s)
        run(config, build_backend(config), peers)
    finally:
        student.close()
        auditor.close()
