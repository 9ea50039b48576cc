"""The typed links: the same tests against the ZeroMQ client and the in-process link, and the handler tables."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from apps.processes import free_tcp_ports
from protocol.clients import AuditorClient, InProcessLink, Link, StudentClient, UnexpectedReply
from protocol.codec import AUDITOR_CHANNEL, STUDENT_CHANNEL, Channel
from protocol.dispatch import Dispatcher, HandlerTableError
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
    JudgeCandidates,
    ModelAnswers,
    Promote,
    RecordTeacherVersion,
    Review,
    Reviews,
    ReviewSelfEdits,
    Rollback,
    ServedStack,
    StudentInfo,
    TeacherVersionRecorded,
    TrainConfig,
    TrainJob,
    Verdicts,
)
from protocol.transport import Client, RemoteError, Server
from tests.examples import CANDIDATE, CONTEXT, EXAMPLES, SELF_EDIT, VERDICT

REVIEW = Review(self_edit_id=SELF_EDIT.self_edit_id, vetoes=[])
VERSION_REQUEST = next(e for e in EXAMPLES if isinstance(e, RecordTeacherVersion))
CANDIDATE_TO_JUDGE = CandidateToJudge(self_edit=SELF_EDIT, candidate=CANDIDATE)
INFO = StudentInfo(base_model="tiny", device="cpu", default_settings=TrainConfig())


class FakeStudent:
    """A student-channel service without a model: answers echo the questions, one per listed adapter."""

    def __init__(self) -> None:
        self.handle = Dispatcher(
            STUDENT_CHANNEL,
            {
                DescribeStudent: lambda r: INFO,
                ApplySelfEdits: lambda r: CandidatesTrained(candidates=[CANDIDATE for _ in r.jobs]),
                AnswerQuestions: self.answer,
                Promote: lambda r: ServedStack(version=1, stack=[r.adapter_id], verdicts={}),
                Rollback: lambda r: ServedStack(version=2, stack=[], verdicts={}),
                DescribeServed: lambda r: ServedStack(version=0, stack=[], verdicts={}),
                AnswerServed: lambda r: INFO,  # a reply of the wrong type, on purpose
            },
        )

    def answer(self, request: AnswerQuestions) -> Answers:
        if request.questions[0] == "boom":
            raise RuntimeError("handler exploded")
        answers = [q.upper() for q in request.questions]
        return Answers(results=[ModelAnswers(adapter_id=a, answers=answers) for a in request.adapter_ids])


class FakeAuditor:
    def __init__(self) -> None:
        self.handle = Dispatcher(
            AUDITOR_CHANNEL,
            {
                ReviewSelfEdits: lambda r: Reviews(reviews=[REVIEW for _ in r.self_edits]),
                JudgeCandidates: lambda r: Verdicts(verdicts=[VERDICT for _ in r.candidates]),
                RecordTeacherVersion: lambda r: TeacherVersionRecorded(ledger_entry="ab" * 32),
            },
        )


def _links(channel: Channel, role: str, handler, kind: str) -> Iterator[Link]:
    if kind == "inproc":
        yield InProcessLink(channel, role, handler, sender="teacher")
        return
    endpoint = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"
    server = Server(endpoint, channel, role, handler)
    server.start()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = Client(endpoint, channel, "teacher", timeout_s=10.0, retries=0)
    try:
        yield client
    finally:
        client.close()
        server.stop()
        thread.join(timeout=5)


@pytest.fixture(params=["zmq", "inproc"])
def student(request) -> Iterator[StudentClient]:
    for link in _links(STUDENT_CHANNEL, "student", FakeStudent().handle, request.param):
        yield StudentClient(link)


@pytest.fixture(params=["zmq", "inproc"])
def auditor(request) -> Iterator[AuditorClient]:
    for link in _links(AUDITOR_CHANNEL, "auditor", FakeAuditor().handle, request.param):
        yield AuditorClient(link)


def test_student_methods_return_their_reply_types(student):
    assert student.ping().role == "student"
    assert student.describe().base_model == "tiny"
    assert len(student.apply_self_edits([_job(), _job()]).candidates) == 2
    answers = student.answer_questions(["hi", "there"], [None, "a" * 64], max_new_tokens=8)
    assert [r.adapter_id for r in answers.results] == [None, "a" * 64]
    assert answers.results[1].answers == ["HI", "THERE"]
    assert student.promote(VERDICT).stack == [VERDICT.adapter_id]
    assert student.rollback().version == 2
    assert student.describe_served().stack == []


def test_a_reply_of_the_wrong_type_raises(student):
    with pytest.raises(UnexpectedReply, match="answered AnswerServed with StudentInfo, not Answers"):
        student.answer_served(["hi"])


def test_a_failing_handler_is_a_typed_error_and_the_service_goes_on(student):
    with pytest.raises(RemoteError, match="internal: RuntimeError: handler exploded"):
        student.answer_questions(["boom"], [None], max_new_tokens=8)
    assert student.answer_questions(["ok"], [None], max_new_tokens=8).results[0].answers == ["OK"]


def test_invalid_requests_are_refused_before_the_handler(student):
    with pytest.raises(RemoteError, match="validation"):  # 1025 tokens is above the message's limit
        student.link.call(AnswerQuestions.model_construct(questions=["hi"], adapter_ids=[None], max_new_tokens=1025))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (AnswerQuestions.model_construct(questions=["hi"], adapter_ids=["../served"], max_new_tokens=8), "adapter_ids"),
        (Promote.model_construct(adapter_id="../../etc/passwd", verdict=VERDICT), "adapter_id"),
        (AnswerServed.model_construct(questions=["hi"], shadow="/tmp/x", max_new_tokens=8), "shadow"),
        (Rollback.model_construct(to="../base"), "to"),
    ],
    ids=["answer-questions", "promote", "shadow", "rollback"],
)
def test_adapter_ids_that_are_not_hex_fail_validation(student, body, field):
    with pytest.raises(RemoteError, match="validation") as err:  # not an internal error revealing store paths
        student.link.call(body)
    assert err.value.reply.field.startswith(field)


def test_auditor_methods_return_their_reply_types(auditor):
    assert len(auditor.review_self_edits([SELF_EDIT]).reviews) == 1
    assert auditor.judge_candidates("c1", [CANDIDATE_TO_JUDGE]).verdicts == [VERDICT]
    assert auditor.record_teacher_version(VERSION_REQUEST).ledger_entry == "ab" * 32


def test_a_handler_table_must_cover_its_channel_exactly():
    with pytest.raises(HandlerTableError, match=r"missing \['record_teacher_version'\]"):
        Dispatcher(AUDITOR_CHANNEL, {ReviewSelfEdits: Reviews, JudgeCandidates: Verdicts})
    table: dict[type[Body], object] = {k: None for k in (ReviewSelfEdits, JudgeCandidates, RecordTeacherVersion)}
    with pytest.raises(HandlerTableError, match=r"not on the channel \['describe_student'\]"):
        Dispatcher(AUDITOR_CHANNEL, {**table, DescribeStudent: None})  # type: ignore[dict-item]



def _job() -> TrainJob:
    return TrainJob(context=CONTEXT, self_edit=SELF_EDIT)


def test_waiting_for_a_peer_that_is_still_loading_logs_no_warning_per_ping(caplog):
    """seal adapt's launcher waits for the student while it loads its model: one error at the deadline, no noise."""
    from apps.processes import free_tcp_ports
    from protocol.codec import STUDENT_CHANNEL
    from protocol.transport import Client, PeerUnavailable
    from teacher.service import wait_for_peers

    (port,) = free_tcp_ports(1)
    client = StudentClient(Client(f"tcp://127.0.0.1:{port}", STUDENT_CHANNEL, "teacher", timeout_s=1.0, retries=1))
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(PeerUnavailable, match=r"the student at .* did not come"):
            wait_for_peers({"student": client}, deadline_s=0.5)
    finally:
        client.close()
    assert not [r for r in caplog.records if r.name == "protocol.transport"]
    assert logging.getLogger("protocol.transport").level == logging.NOTSET, "the logger's level is given back"
