"""Typed links between roles: one client class per channel, a method per request, the reply type in its signature.

A client talks through a :class:`Link`: :class:`protocol.transport.Client` over ZeroMQ, or
:class:`InProcessLink` to a service in the same process (tests, benches). Both carry the same
bytes: the in-process link encodes and decodes every message with the codec and serves it through
:func:`protocol.dispatch.answer`, so a typed error, a validation failure or an unexpected reply
looks the same in and out of process. A reply of the wrong type raises :class:`UnexpectedReply`;
a typed error reply raises :class:`protocol.transport.RemoteError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from protocol.codec import AUDITOR_CHANNEL, STUDENT_CHANNEL, Channel, ProtocolError, decode, encode, make_envelope
from protocol.dispatch import answer
from protocol.messages import (
    AnswerQuestions,
    Answers,
    AnswerServed,
    ApplySelfEdits,
    Body,
    CandidatesTrained,
    CandidateToJudge,
    DescribeServed,
    DescribeStudent,
    ErrorReply,
    JudgeCandidates,
    Pong,
    Promote,
    RecordTeacherVersion,
    Reviews,
    ReviewSelfEdits,
    Role,
    Rollback,
    SelfEdit,
    ServedStack,
    StudentInfo,
    TeacherVersionRecorded,
    TrainJob,
    Verdict,
    Verdicts,
)
from protocol.transport import RemoteError, UnexpectedReply

R = TypeVar("R", bound=Body)


class Link(Protocol):
    """A request/reply connection to one peer (ZeroMQ or in-process)."""

    endpoint: str

    def call(self, body: Body, timeout_s: float | None = None) -> Body: ...

    def ping(self, timeout_s: float = 2.0) -> Pong: ...

    def close(self) -> None: ...


class InProcessLink:
    """A link to a service's handler in this process, through the codec as over the wire."""

    def __init__(self, channel: Channel, role: Role, handler: Callable[[Body], Body], sender: Role = "cli"):
        self.channel, self.role, self.handler, self.sender = channel, role, handler, sender
        self.endpoint = f"inproc://{role}"

    def call(self, body: Body, timeout_s: float | None = None) -> Body:
        """Serve ``body`` now; raise RemoteError on a typed error reply, as the ZeroMQ client does."""
        envelope = make_envelope(body, self.sender)
        try:  # as the server's I/O side: a request that does not decode gets a typed error, not the handler
            served = answer(self.handler, decode(encode(envelope), self.channel, "request").body)
        except ProtocolError as exc:
            served = exc.to_reply()
        reply = make_envelope(served, self.role, correlation_id=envelope.header.id)
        body = decode(encode(reply), self.channel, "reply").body
        if isinstance(body, ErrorReply):
            raise RemoteError(body, f"{self.channel.name} in process")
        return body

    def ping(self, timeout_s: float = 2.0) -> Pong:
        return Pong(role=self.role)

    def close(self) -> None:
        """Nothing to release: the service belongs to its owner."""


class _TypedClient:
    """What every typed client shares: the link, the reply check, liveness and closing."""

    def __init__(self, link: Link):
        self.link = link

    @property
    def endpoint(self) -> str:
        return self.link.endpoint

    def ping(self, timeout_s: float = 2.0) -> Pong:
        """One liveness probe with no retries."""
        return self.link.ping(timeout_s)

    def close(self) -> None:
        self.link.close()

    def _request(self, body: Body, reply_type: type[R], timeout_s: float | None = None) -> R:
        reply = self.link.call(body, timeout_s)
        if not isinstance(reply, reply_type):
            raise UnexpectedReply(
                f"{self.link.endpoint} answered {type(body).__name__} with {type(reply).__name__}, "
                f"not {reply_type.__name__}"
            )
        return reply


class StudentClient(_TypedClient):
    """The student channel: training candidates, answering questions, the served stack."""

    def describe(self, timeout_s: float | None = None) -> StudentInfo:
        return self._request(DescribeStudent(), StudentInfo, timeout_s)

    def apply_self_edits(self, jobs: list[TrainJob], timeout_s: float | None = None) -> CandidatesTrained:
        """One candidate per job, in the jobs' order."""
        return self._request(ApplySelfEdits(jobs=jobs), CandidatesTrained, timeout_s)

    def answer_questions(
        self,
        questions: list[str],
        adapter_ids: list[str | None],
        max_new_tokens: int,
        timeout_s: float | None = None,
        instruction: str | None = None,
        stack: list[str] | None = None,
    ) -> Answers:
        """Every question answered by every listed model (None: the base model, or ``stack``), greedily.

        ``instruction``: the answer instruction (None: the standard one, "": none); ``stack``: adapters under
        every model (see :class:`protocol.messages.AnswerQuestions`).
        """
        request = AnswerQuestions(
            questions=questions,
            adapter_ids=adapter_ids,
            max_new_tokens=max_new_tokens,
            instruction=instruction,
            stack=stack or [],
        )
        return self._request(request, Answers, timeout_s)

    def promote(self, verdict: Verdict, timeout_s: float | None = None) -> ServedStack:
        """Serve the verdict's adapter on top of the stack (refused unless the verdict is signed and accepting)."""
        return self._request(Promote(adapter_id=verdict.adapter_id, verdict=verdict), ServedStack, timeout_s)

    def rollback(self, to: str | None = None, timeout_s: float | None = None) -> ServedStack:
        """Drop the top adapter, or every adapter above ``to`` (an adapter id or prefix, or "base")."""
        return self._request(Rollback(to=to), ServedStack, timeout_s)

    def describe_served(self, timeout_s: float | None = None) -> ServedStack:
        return self._request(DescribeServed(), ServedStack, timeout_s)

    def answer_served(
        self, questions: list[str], shadow: str | None = None, timeout_s: float | None = None
    ) -> Answers:
        """The served model's answers; with ``shadow``, also that adapter's on top of the stack."""
        return self._request(AnswerServed(questions=questions, shadow=shadow), Answers, timeout_s)


class AuditorClient(_TypedClient):
    """The auditor channel: reviews before training, verdicts after, teacher versions."""

    def review_self_edits(self, self_edits: list[SelfEdit], timeout_s: float | None = None) -> Reviews:
        """The text rules' vetoes, one review per self-edit in order."""
        return self._request(ReviewSelfEdits(self_edits=self_edits), Reviews, timeout_s)

    def judge_candidates(
        self, context_id: str, candidates: list[CandidateToJudge], timeout_s: float | None = None
    ) -> Verdicts:
        """A signed verdict per candidate, each recorded in the auditor's ledger before it is returned."""
        return self._request(JudgeCandidates(context_id=context_id, candidates=candidates), Verdicts, timeout_s)

    def record_teacher_version(
        self, request: RecordTeacherVersion, timeout_s: float | None = None
    ) -> TeacherVersionRecorded:
        """The auditor checks every claimed reward against its own verdicts, then records the version."""
        return self._request(request, TeacherVersionRecorded, timeout_s)


def student_in_process(handler: Callable[[Body], Body], sender: Role = "teacher") -> StudentClient:
    """A student client served by ``handler`` in this process (a :class:`student.service.Student`'s)."""
    return StudentClient(InProcessLink(STUDENT_CHANNEL, "student", handler, sender))


def auditor_in_process(handler: Callable[[Body], Body], sender: Role = "teacher") -> AuditorClient:
    """An auditor client served by ``handler`` in this process (an :class:`auditor.service.Auditor`'s)."""
    return AuditorClient(InProcessLink(AUDITOR_CHANNEL, "auditor", handler, sender))

