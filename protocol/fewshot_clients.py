"""Typed links of the few-shot (ARC) domain: one client per channel, over ZeroMQ or in process.

As :mod:`protocol.clients`, whose link and reply check they share: a method per request, the reply
type in its signature, :class:`~protocol.transport.UnexpectedReply` for a reply of another type.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.clients import InProcessLink, _TypedClient
from protocol.codec import FEWSHOT_AUDITOR_CHANNEL, FEWSHOT_STUDENT_CHANNEL
from protocol.fewshot import ArcTask
from protocol.fewshot_messages import (
    AnswerTask,
    GradeInContext,
    InContextGraded,
    JudgeTask,
    TaskAnswers,
    TaskTrained,
    TrainTask,
    TTTCandidate,
)
from protocol.messages import Body, RecordTeacherVersion, Role, SelfEdit, TeacherVersionRecorded, Verdicts


class FewShotStudentClient(_TypedClient):
    """The few-shot student: test-time training on a task's demonstrations, answers to its test inputs."""

    def train_task(self, task: ArcTask, self_edit: SelfEdit, timeout_s: float | None = None) -> TaskTrained:
        """A fresh adapter trained on ``task`` following ``self_edit``'s recipe (or why the task was skipped)."""
        return self._request(TrainTask(task=task, self_edit=self_edit), TaskTrained, timeout_s)

    def answer_task(self, task: ArcTask, adapter_id: str | None, timeout_s: float | None = None) -> TaskAnswers:
        """Two attempts per test input, with ``adapter_id`` (None: the base model, in context)."""
        return self._request(AnswerTask(task=task, adapter_id=adapter_id), TaskAnswers, timeout_s)


class FewShotAuditorClient(_TypedClient):
    """The few-shot auditor: signed exact-match verdicts, in-context grades, teacher versions."""

    def judge_task(
        self, task_id: str, self_edit: SelfEdit, candidate: TTTCandidate, timeout_s: float | None = None
    ) -> Verdicts:
        """One signed verdict on ``candidate``, recorded in the auditor's ledger before it is returned."""
        request = JudgeTask(task_id=task_id, self_edit=self_edit, candidate=candidate)
        return self._request(request, Verdicts, timeout_s)

    def grade_in_context(self, task_id: str, timeout_s: float | None = None) -> InContextGraded:
        """How the unadapted student does on the task (not a verdict: nothing was adapted)."""
        return self._request(GradeInContext(task_id=task_id), InContextGraded, timeout_s)

    def record_teacher_version(
        self, request: RecordTeacherVersion, timeout_s: float | None = None
    ) -> TeacherVersionRecorded:
        """The auditor checks every claimed reward against its own verdicts, then records the version."""
        return self._request(request, TeacherVersionRecorded, timeout_s)


def fewshot_student_in_process(handler: Callable[[Body], Body], sender: Role = "teacher") -> FewShotStudentClient:
    """A few-shot student client served by ``handler`` in this process."""
    return FewShotStudentClient(InProcessLink(FEWSHOT_STUDENT_CHANNEL, "student", handler, sender))


def fewshot_auditor_in_process(handler: Callable[[Body], Body], sender: Role = "teacher") -> FewShotAuditorClient:
    """A few-shot auditor client served by ``handler`` in this process."""
    return FewShotAuditorClient(InProcessLink(FEWSHOT_AUDITOR_CHANNEL, "auditor", handler, sender))
