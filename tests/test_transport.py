"""Real ZeroMQ sockets on loopback between separate processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import zmq

from apps.processes import free_tcp_ports
from protocol.codec import STUDENT_CHANNEL, decode, encode, make_envelope
from protocol.messages import AnswerQuestions, Answers, ErrorReply, ModelAnswers, Ping
from protocol.transport import Client, Heartbeat, PeerUnavailable, RemoteError, Server, open_socket
from tests.test_codec import _frames


def _echo_server(endpoint: str, max_bytes: int) -> None:
    """A student-channel server: answers are the questions upper-cased; 'sleep:S' sleeps S seconds."""
    calls = {"n": 0}

    def handle(body):
        calls["n"] += 1
        if body.questions[0] == "boom":
            raise RuntimeError("handler exploded")
        if body.questions[0] == "unencodable":
            return Answers(results=[ModelAnswers(adapter_id=None, answers=["\ud800"])])
        if body.questions[0].startswith("sleep:"):
            time.sleep(float(body.questions[0].split(":")[1]))
        answers = [q.upper() for q in body.questions] + [f"calls={calls['n']}"]
        return Answers(results=[ModelAnswers(adapter_id=None, answers=answers)])

    Server(endpoint, STUDENT_CHANNEL, "student", handle, max_bytes=max_bytes).serve()


@pytest.fixture
def server_endpoint():
    endpoint = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"
    proc = mp.get_context("spawn").Process(target=_echo_server, args=(endpoint, 16384), daemon=True)
    proc.start()
    client = Client(endpoint, STUDENT_CHANNEL, "teacher", timeout_s=1.0, retries=30)
    client.call(Ping())  # wait until it is up
    client.close()
    yield endpoint, proc
    proc.kill()
    proc.join()


def _ask(endpoint: str, question: str, **kwargs) -> Answers:
    client = Client(endpoint, STUDENT_CHANNEL, "teacher", **kwargs)
    try:
        return client.call(AnswerQuestions(questions=[question], adapter_ids=[None]))
    finally:
        client.close()


def test_request_reply_between_processes(server_endpoint):
    reply = _ask(server_endpoint[0], "who?")
    assert reply.results[0].answers[0] == "WHO?"


def _raw_exchange(endpoint: str, frames: list[bytes], routing_id: bytes | None = None):
    sock = open_socket(zmq.Context.instance(), zmq.REQ, endpoint, bind=False, routing_id=routing_id)
    try:
        sock.send_multipart(frames)
        assert sock.poll(5000), "server did not answer bad input"
        return decode(sock.recv_multipart(), STUDENT_CHANNEL, "reply")
    finally:
        sock.close(linger=0)


@pytest.mark.parametrize(
    ("frames", "reason", "field"),
    [
        ([b"\x80not json", b"{}"], "undecodable", None),
        (_frames({"type": "no_such_thing"}), "unknown_type", "type"),
        (_frames({"v": 99}), "protocol_version", "v"),
        (
            _frames({"type": "answer_questions"}, {"type": "answer_questions", "questions": []}),
            "validation",
            "questions",
        ),
        ([b"{}", b"x" * 9000, b"x" * 9000], "oversized", None),  # each frame under the limit, the message over
    ],
    ids=["undecodable", "unknown-type", "version", "validation", "oversized"],
)
def test_bad_input_gets_typed_error_and_server_keeps_serving(server_endpoint, frames, reason, field):
    endpoint = server_endpoint[0]
    reply = _raw_exchange(endpoint, frames)
    assert isinstance(reply.body, ErrorReply)
    assert (reply.body.reason, reply.body.field) == (reason, field)
    assert _ask(endpoint, "still there?").results[0].answers[0] == "STILL THERE?"


def test_handler_exception_is_an_error_reply(server_endpoint):
    with pytest.raises(RemoteError, match="handler exploded") as err:
        _ask(server_endpoint[0], "boom")
    assert err.value.reply.reason == "internal"
    assert _ask(server_endpoint[0], "after").results[0].answers[0] == "AFTER"


def test_a_reply_that_cannot_be_encoded_is_an_internal_error(server_endpoint):
    with pytest.raises(RemoteError, match="could not be encoded") as err:
        _ask(server_endpoint[0], "unencodable")
    assert err.value.reply.reason == "internal"
    assert _ask(server_endpoint[0], "after").results[0].answers[0] == "AFTER"


def test_peer_that_never_answers_times_out():
    endpoint = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"  # nobody there
    started = time.monotonic()
    with pytest.raises(PeerUnavailable, match="--my-timeout"):
        _ask(endpoint, "hello?", timeout_s=0.3, retries=2, timeout_setting="--my-timeout")
    assert time.monotonic() - started < 3


def test_retry_after_timeout_does_not_run_the_request_twice(server_endpoint):
    reply = _ask(server_endpoint[0], "sleep:1.5", timeout_s=0.4, retries=8)
    assert reply.results[0].answers[-1] == "calls=1"


def test_a_late_reply_to_an_abandoned_request_is_not_taken_for_the_next_ones(server_endpoint):
    # The client gives up on a slow request; its late reply goes to the client's identity, so to its next socket.
    client = Client(server_endpoint[0], STUDENT_CHANNEL, "teacher", timeout_s=0.4, retries=0)
    try:
        with pytest.raises(PeerUnavailable):
            client.call(AnswerQuestions(questions=["sleep:1.5"], adapter_ids=[None]))
        reply = client.call(AnswerQuestions(questions=["next"], adapter_ids=[None]), timeout_s=10)
    finally:
        client.close()
    assert reply.results[0].answers[:1] == ["NEXT"]


def test_ping_answered_while_busy(server_endpoint):
    endpoint = server_endpoint[0]
    slow = threading.Thread(target=_ask, args=(endpoint, "sleep:3"), kwargs={"timeout_s": 10})
    slow.start()
    pinger = Client(endpoint, STUDENT_CHANNEL, "cli")
    pongs = []
    while slow.is_alive() and not any(p.busy for p in pongs):  # until the slow request is under way
        pongs.append(pinger.ping(timeout_s=1.0))
        time.sleep(0.05)
    slow.join()
    pinger.close()
    assert any(p.busy for p in pongs)


def test_peer_dying_mid_request_is_peer_unavailable(server_endpoint):
    endpoint, proc = server_endpoint
    outcome: dict[str, BaseException] = {}

    def call() -> None:
        try:
            _ask(endpoint, "sleep:5", timeout_s=1.0, retries=1)
        except BaseException as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)
    proc.kill()  # the server dies while it works on the request
    caller.join(timeout=10)
    assert isinstance(outcome.get("error"), PeerUnavailable)


_QUESTION = {"type": "answer_questions", "questions": ["x"], "adapter_ids": [None]}


@pytest.mark.parametrize(
    "frames",
    [
        _frames({"type": "answer_questions", "id": "\ud800"}, _QUESTION),  # echoed as the reply's correlation id
        _frames({"type": "answer_questions"}, _QUESTION | {"questions": ["\ud800"]}),  # echoed in the answers
        [_frames()[0], b"[" * 1000 + b"]" * 1000],
        [_frames()[0], b'{"type": "ping", "n": ' + b"9" * 4301 + b"}"],
    ],
    ids=["surrogate-in-header", "surrogate-in-body", "deep", "long-int"],
)
def test_a_hostile_frame_never_stops_the_server(server_endpoint, frames):
    reply = _raw_exchange(server_endpoint[0], frames)
    assert isinstance(reply.body, ErrorReply)
    assert reply.body.reason == "undecodable"
    assert _ask(server_endpoint[0], "still there?").results[0].answers[0] == "STILL THERE?"


def _question_frames(question: str, msg_id: str) -> list[bytes]:
    return encode(make_envelope(AnswerQuestions(questions=[question], adapter_ids=[None]), "teacher", msg_id=msg_id))


def test_a_reused_message_id_never_gets_another_requests_reply(server_endpoint):
    endpoint = server_endpoint[0]

    def answers(question: str, client: bytes) -> list[str]:
        return _raw_exchange(endpoint, _question_frames(question, "same-id"), routing_id=client).body.results[0].answers

    assert answers("first", b"one") == ["FIRST", "calls=1"]
    assert answers("second", b"one") == ["SECOND", "calls=2"]  # same client and id, another body
    assert answers("first", b"two") == ["FIRST", "calls=3"]  # another client, same id and body
    assert answers("first", b"one") == ["FIRST", "calls=1"]  # a retry: from the cache, not run again


def _peak_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def test_a_frame_over_max_bytes_is_cut_off_before_it_is_buffered(server_endpoint):
    endpoint, proc = server_endpoint
    before = _peak_rss_bytes(proc.pid)
    sock = open_socket(zmq.Context.instance(), zmq.REQ, endpoint, bind=False)
    try:
        sock.send_multipart([_frames()[0], b"x" * (64 << 20)])
        assert not sock.poll(2000), "a 64 MiB frame was read whole and answered"
    finally:
        sock.close(linger=0)
    assert _peak_rss_bytes(proc.pid) - before < 16 << 20
    assert _ask(endpoint, "still there?").results[0].answers[0] == "STILL THERE?"


def _call_in_thread(endpoint: str, question: str, **kwargs) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["reply"] = _ask(endpoint, question, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


FAST_HEARTBEAT = Heartbeat(interval_s=0.2, timeout_s=1.0)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_a_dead_peer_is_reported_within_seconds_despite_a_long_timeout(server_endpoint, sig):
    endpoint, proc = server_endpoint
    caller, outcome = _call_in_thread(endpoint, "sleep:30", timeout_s=60.0, retries=1, heartbeat=FAST_HEARTBEAT)
    time.sleep(0.5)
    started = time.monotonic()
    os.kill(proc.pid, sig)  # SIGSTOP: the host is up, the process answers nothing, not even heartbeats
    caller.join(timeout=15)
    assert isinstance(outcome.get("error"), PeerUnavailable)
    assert endpoint in str(outcome["error"])
    assert time.monotonic() - started < 5


def test_a_handler_slower_than_the_heartbeat_timeout_still_answers(server_endpoint):
    reply = _ask(server_endpoint[0], "sleep:2", timeout_s=10.0, retries=0, heartbeat=Heartbeat(0.2, 0.5))
    assert reply.results[0].answers == ["SLEEP:2", "calls=1"]


def test_a_kept_socket_waits_for_a_slow_reply_on_every_call(server_endpoint):
    """The handshake is reported once per socket: a second call on it must not count as never connected."""
    client = Client(
        server_endpoint[0], STUDENT_CHANNEL, "teacher", timeout_s=10.0, retries=0, heartbeat=Heartbeat(0.2, 0.5)
    )
    try:
        for n in (1, 2):
            reply = client.call(AnswerQuestions(questions=["sleep:1"], adapter_ids=[None]))
            assert reply.results[0].answers == ["SLEEP:1", f"calls={n}"]
    finally:
        client.close()
