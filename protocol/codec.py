"""Wire encoding: the only place that turns messages into bytes and back.

A message travels as two ZeroMQ frames: a JSON *header* (protocol version,
message id, correlation id, sender role, timestamp and the body's type tag)
and a JSON *body*. The type tag is read, and the version checked, before the
body is decoded. Every failure to decode raises :class:`ProtocolError`, whose
``reason`` and ``field`` become the typed :class:`ErrorReply` a server sends.

Decoding is bounded and total. Frames are parsed by pydantic-core's JSON parser,
which enforces its limits while it parses: nesting deeper than about 200 levels,
integers of more than 4,300 digits (Python's conversion limit) and strings that
are not Unicode (a lone surrogate, escaped as ``\\ud800`` or encoded raw) are
refused as ``undecodable``, so no frame can exhaust the recursion limit or
yield text that could never be encoded into a reply.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from protocol.fewshot_messages import (
    FewShotAuditorReply,
    FewShotAuditorRequest,
    FewShotStudentReply,
    FewShotStudentRequest,
)
from protocol.messages import (
    AuditorReply,
    AuditorRequest,
    Body,
    ErrorReason,
    ErrorReply,
    Role,
    StudentReply,
    StudentRequest,
)

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """Bytes that are not a valid message of the expected channel."""

    def __init__(self, reason: ErrorReason, detail: str, field: str | None = None):
        super().__init__(f"{reason}: {detail}" + (f" (field {field})" if field else ""))
        self.reason = reason
        self.detail = detail
        self.field = field

    def to_reply(self) -> ErrorReply:
        return ErrorReply(reason=self.reason, detail=self.detail, field=self.field)


class Header(BaseModel):
    """Everything about a message except its body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = PROTOCOL_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    correlation_id: str | None = None
    sender: Role
    ts: float = Field(default_factory=time.time)
    type: str


@dataclass(frozen=True)
class Envelope:
    """A decoded message: its header and its typed body."""

    header: Header
    body: Body


@dataclass(frozen=True)
class Channel:
    """One socket's message families: the tagged union of requests and of replies."""

    name: str
    requests: TypeAdapter[Any]
    replies: TypeAdapter[Any]

    def union(self, direction: str) -> TypeAdapter[Any]:
        return self.requests if direction == "request" else self.replies

    def type_tags(self, direction: str) -> set[str]:
        """The ``type`` tags allowed in one direction, read from the union's schema."""
        schema = self.union(direction).json_schema()
        return set(schema["discriminator"]["mapping"])


STUDENT_CHANNEL = Channel("student", TypeAdapter(StudentRequest), TypeAdapter(StudentReply))
AUDITOR_CHANNEL = Channel("auditor", TypeAdapter(AuditorRequest), TypeAdapter(AuditorReply))
# The few-shot (ARC) domain's sockets: the same roles and keys, its own message family (protocol.fewshot_messages).
FEWSHOT_STUDENT_CHANNEL = Channel("student", TypeAdapter(FewShotStudentRequest), TypeAdapter(FewShotStudentReply))
FEWSHOT_AUDITOR_CHANNEL = Channel("auditor", TypeAdapter(FewShotAuditorRequest), TypeAdapter(FewShotAuditorReply))


def make_envelope(body: Body, sender: Role, correlation_id: str | None = None, msg_id: str | None = None) -> Envelope:
    """Wrap ``body`` in a fresh header."""
    fields: dict[str, Any] = {"sender": sender, "type": body.type, "correlation_id": correlation_id}  # type: ignore[attr-defined]
    if msg_id is not None:
        fields["id"] = msg_id
    return Envelope(Header(**fields), body)


def encode(envelope: Envelope) -> list[bytes]:
    """Envelope to the two frames that go on the wire."""
    return [envelope.header.model_dump_json().encode(), envelope.body.model_dump_json().encode()]


def decode(
    frames: list[bytes],
    channel: Channel,
    direction: str,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Envelope:
    """Frames to a typed envelope, or :class:`ProtocolError` saying exactly what is wrong."""
    size = sum(len(f) for f in frames)
    if size > max_bytes:
        raise ProtocolError("oversized", f"message of {size} bytes exceeds the limit of {max_bytes} bytes")
    if len(frames) != 2:
        raise ProtocolError("undecodable", f"expected 2 frames (header, body), got {len(frames)}")
    header = _decode_header(frames[0])
    if header.type not in channel.type_tags(direction):
        allowed = ", ".join(sorted(channel.type_tags(direction)))
        raise ProtocolError(
            "unknown_type", f"'{header.type}' is not a {channel.name} {direction}; expected one of {allowed}", "type"
        )
    body = _decode_body(frames[1], header.type, channel.union(direction))
    return Envelope(header, body)


def peek_header(frames: list[bytes]) -> Header | None:
    """The header if it decodes, else None (used to address an error reply)."""
    try:
        return _decode_header(frames[0]) if frames else None
    except ProtocolError:
        return None


def _decode_header(raw: bytes) -> Header:
    data = _load_json(raw, "header")
    if not isinstance(data, dict):
        raise ProtocolError("undecodable", "header is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            "protocol_version", f"got version {data.get('v')!r}, this peer speaks {PROTOCOL_VERSION}", "v"
        )
    try:
        return Header.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, prefix="header") from None


def _decode_body(raw: bytes, type_tag: str, union: TypeAdapter[Any]) -> Body:
    data = _load_json(raw, "body")
    if not isinstance(data, dict) or data.get("type") != type_tag:
        raise ProtocolError("validation", f"body type does not match header type '{type_tag}'", "type")
    try:
        return union.validate_python(data)
    except ValidationError as exc:
        raise _validation_error(exc, prefix=None, skip=1) from None


def _load_json(raw: bytes, part: str) -> Any:
    """One frame's JSON, parsed within the parser's depth, number and Unicode limits."""
    try:
        return from_json(raw)
    except ValueError as exc:  # every refusal of the parser, limits included, is a ValueError
        raise ProtocolError("undecodable", f"{part} is not JSON within the limits: {exc}") from None


def _validation_error(exc: ValidationError, prefix: str | None, skip: int = 0) -> ProtocolError:
    """First validation failure as a ProtocolError naming the field's dotted path.

    ``skip`` drops leading location parts added by the union (its tag).
    """
    first = exc.errors()[0]
    parts = [str(p) for p in first["loc"][skip:]]
    field = ".".join(([prefix] if prefix else []) + parts) or None
    return ProtocolError("validation", first["msg"], field)
