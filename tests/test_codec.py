"""Every message type survives the wire; every kind of bad bytes gets its typed reason."""

from __future__ import annotations

import json

import pytest

from protocol.codec import (
    AUDITOR_CHANNEL,
    FEWSHOT_AUDITOR_CHANNEL,
    FEWSHOT_STUDENT_CHANNEL,
    PROTOCOL_VERSION,
    STUDENT_CHANNEL,
    ProtocolError,
    decode,
    encode,
    make_envelope,
)
from protocol.messages import ApplySelfEdits, Ping
from tests.examples import CONTEXT, EXAMPLES, SELF_EDIT

CHANNELS = (STUDENT_CHANNEL, AUDITOR_CHANNEL, FEWSHOT_STUDENT_CHANNEL, FEWSHOT_AUDITOR_CHANNEL)


def _channel_and_direction(body):
    for channel in CHANNELS:
        for direction in ("request", "reply"):
            if body.type in channel.type_tags(direction):
                yield channel, direction


def test_examples_cover_every_message_type():
    tags = {t for ch in CHANNELS for d in ("request", "reply") for t in ch.type_tags(d)}
    assert tags == {e.type for e in EXAMPLES}


@pytest.mark.parametrize("body", EXAMPLES, ids=lambda b: b.type)
def test_round_trip(body):
    for channel, direction in _channel_and_direction(body):
        envelope = make_envelope(body, "teacher", correlation_id="x1")
        decoded = decode(encode(envelope), channel, direction)
        assert decoded.body == body
        assert decoded.header == envelope.header
        assert decoded.header.type == body.type


def _frames(header_overrides=None, body=None):
    env = make_envelope(Ping(), "teacher")
    header = json.loads(env.header.model_dump_json()) | (header_overrides or {})
    return [json.dumps(header).encode(), json.dumps(body if body is not None else {"type": "ping"}).encode()]


@pytest.mark.parametrize(
    ("frames", "reason", "field"),
    [
        ([b"\xff\xfe", b"{}"], "undecodable", None),
        ([b"{}"], "undecodable", None),
        (_frames({"v": PROTOCOL_VERSION + 1}), "protocol_version", "v"),
        (_frames({"type": "launch_missiles"}), "unknown_type", "type"),
        (_frames({"type": "apply_self_edits"}, {"type": "apply_self_edits", "jobs": []}), "validation", "jobs"),
        (_frames(body={"type": "ping", "extra": 1}), "validation", "extra"),
        (_frames({"sender": "stranger"}), "validation", "header.sender"),
    ],
    ids=["not-utf8", "one-frame", "version", "unknown-type", "empty-jobs", "extra-field", "bad-sender"],
)
def test_bad_input_gets_typed_reason(frames, reason, field):
    with pytest.raises(ProtocolError) as err:
        decode(frames, STUDENT_CHANNEL, "request")
    assert err.value.reason == reason
    assert err.value.field == field
    assert err.value.to_reply().reason == reason


def test_nested_validation_error_names_the_field():
    body = json.loads(ApplySelfEdits(jobs=[{"context": CONTEXT, "self_edit": SELF_EDIT}]).model_dump_json())
    body["jobs"][0]["settings"] = {"rank": 0}
    frames = _frames({"type": "apply_self_edits"}, body)
    with pytest.raises(ProtocolError) as err:
        decode(frames, STUDENT_CHANNEL, "request")
    assert err.value.field == "jobs.0.settings.rank"


def test_oversized_message_is_refused_before_decoding():
    frames = _frames()
    with pytest.raises(ProtocolError) as err:
        decode(frames, STUDENT_CHANNEL, "request", max_bytes=10)
    assert err.value.reason == "oversized"


def test_reply_types_are_not_requests():
    envelope = make_envelope(EXAMPLES[-1], "auditor")  # Verdicts
    with pytest.raises(ProtocolError) as err:
        decode(encode(envelope), AUDITOR_CHANNEL, "request")
    assert err.value.reason == "unknown_type"


_HEADER = _frames()[0]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1000 + b"]" * 1000,  # 2 kB that exhausted json's recursion limit
        b'{"type": "ping", "n": ' + b"9" * 4301 + b"}",  # past Python's int conversion limit
        b'{"type": "ping", "x": "\\ud800"}',  # an escaped lone surrogate
        '{"type": "ping", "x": "\ud800"}'.encode("utf-8", "surrogatepass"),  # the same, encoded raw
    ],
    ids=["deep", "long-int", "escaped-surrogate", "raw-surrogate"],
)
@pytest.mark.parametrize("frame", ["header", "body"])
def test_hostile_json_is_undecodable_not_an_exception(raw, frame):
    frames = [raw, _frames()[1]] if frame == "header" else [_HEADER, raw]
    with pytest.raises(ProtocolError) as err:
        decode(frames, STUDENT_CHANNEL, "request")
    assert err.value.reason == "undecodable"
