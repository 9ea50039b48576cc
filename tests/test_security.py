"""CURVE on real sockets: only the known roles' keys get in; plain TCP only on loopback, and only when asked."""

from __future__ import annotations

import threading

import pytest
import zmq.auth

from apps.processes import free_tcp_ports
from protocol.authorisation import PERMISSIONS
from protocol.codec import AUDITOR_CHANNEL, FEWSHOT_AUDITOR_CHANNEL, FEWSHOT_STUDENT_CHANNEL, STUDENT_CHANNEL
from protocol.messages import AnswerQuestions, Answers, ApplySelfEdits, Body, ModelAnswers, Pong, Promote, Rollback
from protocol.security import (
    CurveClient,
    KeyPair,
    SecurityError,
    check_insecure_endpoint,
    client_security,
    create_role_keys,
    server_security,
)
from protocol.transport import Client, PeerUnavailable, RemoteError, Server
from tests.examples import CONTEXT, SELF_EDIT, VERDICT


def _echo(body):
    return Answers(results=[ModelAnswers(adapter_id=None, answers=[q.upper() for q in body.questions])])


@pytest.fixture
def secure_server(tmp_path):
    keys = tmp_path / "keys"
    create_role_keys(keys)
    endpoint = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"
    server = Server(endpoint, STUDENT_CHANNEL, "student", _echo, security=server_security(keys, "student"))
    server.start()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield endpoint, keys
    server.stop()
    thread.join(timeout=5)


def _ask(endpoint: str, security: CurveClient | None, sender: str = "auditor", body: Body | None = None) -> Answers:
    client = Client(endpoint, STUDENT_CHANNEL, sender, timeout_s=1.0, retries=0, security=security)  # type: ignore[arg-type]
    try:
        return client.call(body or AnswerQuestions(questions=["hi"], adapter_ids=[None]))
    finally:
        client.close()


def test_known_role_connects(secure_server):
    endpoint, keys = secure_server
    assert _ask(endpoint, client_security(keys, "auditor", "student")).results[0].answers == ["HI"]


def test_client_without_an_allowed_key_cannot_connect(secure_server, tmp_path):
    endpoint, keys = secure_server
    public, secret = zmq.auth.load_certificate(str(zmq.auth.create_certificates(str(tmp_path), "stranger")[1]))
    stranger = CurveClient(KeyPair(public, secret), client_security(keys, "teacher", "student").server_public)
    with pytest.raises(PeerUnavailable):
        _ask(endpoint, stranger)


def test_client_with_the_wrong_server_key_is_refused(secure_server):
    endpoint, keys = secure_server
    own = client_security(keys, "teacher", "student")
    wrong = CurveClient(own.keys, client_security(keys, "teacher", "auditor").server_public)
    with pytest.raises(PeerUnavailable):
        _ask(endpoint, wrong)


def test_plain_client_cannot_talk_to_a_curve_server(secure_server):
    endpoint, _ = secure_server
    with pytest.raises(PeerUnavailable):
        _ask(endpoint, None)


def test_the_server_keeps_serving_known_roles_after_refusals(secure_server, tmp_path):
    endpoint, keys = secure_server
    with pytest.raises(PeerUnavailable):
        _ask(endpoint, None)
    client = Client(endpoint, STUDENT_CHANNEL, "auditor", security=client_security(keys, "auditor", "student"))
    assert isinstance(client.ping(timeout_s=2.0), Pong)
    client.close()


@pytest.mark.parametrize("endpoint", ["tcp://10.0.0.5:5555", "tcp://0.0.0.0:5555", "tcp://student:5555"])
def test_insecure_mode_is_refused_off_loopback(endpoint):
    with pytest.raises(SecurityError, match="only allowed on loopback"):
        check_insecure_endpoint(endpoint)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:5", "ipc:///tmp/x"])
def test_insecure_mode_is_allowed_on_loopback(endpoint, caplog):
    check_insecure_endpoint(endpoint)
    assert "INSECURE" in caplog.text or endpoint.startswith("ipc")


def test_missing_keys_name_the_fix(tmp_path):
    with pytest.raises(SecurityError, match="seal keys init"):
        server_security(tmp_path, "student")


@pytest.mark.parametrize(
    ("role", "body"),
    [
        ("teacher", Promote(adapter_id=VERDICT.adapter_id, verdict=VERDICT)),
        ("auditor", Rollback(to="base")),
        ("teacher", AnswerQuestions(questions=["hi"], adapter_ids=[None])),
        ("cli", ApplySelfEdits(jobs=[{"context": CONTEXT, "self_edit": SELF_EDIT}])),
    ],
    ids=["teacher-promotes", "auditor-rolls-back", "teacher-answers", "cli-trains"],
)
def test_a_key_may_send_only_its_roles_requests(secure_server, role, body):
    endpoint, keys = secure_server
    with pytest.raises(RemoteError) as err:
        _ask(endpoint, client_security(keys, role, "student"), sender=role, body=body)
    assert (err.value.reply.reason, err.value.reply.field) == ("forbidden", "type")


def test_a_header_sender_other_than_the_keys_role_is_forbidden(secure_server):
    endpoint, keys = secure_server
    with pytest.raises(RemoteError) as err:  # the auditor's key claiming to be the CLI, to roll back
        _ask(endpoint, client_security(keys, "auditor", "student"), sender="cli", body=Rollback())
    assert (err.value.reply.reason, err.value.reply.field) == ("forbidden", "header.sender")
    assert _ask(endpoint, client_security(keys, "auditor", "student")).results[0].answers == ["HI"]


@pytest.mark.parametrize("server", ["student", "auditor"])
def test_every_request_of_a_channel_is_some_roles_to_send(server):
    granted = set().union(*PERMISSIONS[server].values())
    channels = (STUDENT_CHANNEL, AUDITOR_CHANNEL, FEWSHOT_STUDENT_CHANNEL, FEWSHOT_AUDITOR_CHANNEL)
    served = set().union(*(c.type_tags("request") for c in channels if c.name == server))  # both domains' sockets
    assert granted == served - {"ping"}
