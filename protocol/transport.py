"""Request/reply over ZeroMQ: a Lazy Pirate client and a serving loop that never dies on bad input.

Server side: an I/O thread owns the ROUTER socket. It decodes each request,
answers malformed ones with a typed :class:`ErrorReply` at once, answers
``Ping`` even while the worker is busy, and hands valid requests to the work
loop (the caller's thread) through a queue. A request re-sent by a client
after a timeout (same message id) is not run twice: it is attached to the run
already under way, or answered from the cache of recent replies.

Client side: a REQ socket per attempt. On timeout the socket is closed with
linger 0, reopened, and the same message re-sent, a bounded number of times;
then :class:`PeerUnavailable` names the setting to change.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import zmq

from protocol.codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Channel,
    Envelope,
    ProtocolError,
    decode,
    encode,
    make_envelope,
    peek_header,
)
from protocol.dispatch import Handler, answer
from protocol.messages import Body, ErrorReply, Ping, Pong, Role
from protocol.security import CurveClient, CurveServer, apply_curve, check_insecure_endpoint, start_authenticator

log = logging.getLogger(__name__)

POLL_INTERVAL_MS = 20
REPLY_CACHE_SIZE = 64


class TransportError(Exception):
    """Base of every error raised by the transport."""


class PeerUnavailable(TransportError):
    """The peer did not answer within the configured timeout and retries (dead, hung or unreachable)."""


class UnexpectedReply(TransportError):
    """The peer answered a request with a reply of another type."""


class RemoteError(TransportError):
    """The peer answered with a typed error."""

    def __init__(self, reply: ErrorReply, peer: str):
        where = f" (field {reply.field})" if reply.field else ""
        super().__init__(f"{peer} refused the request: {reply.reason}: {reply.detail}{where}")
        self.reply = reply


# --------------------------------------------------------------------------- sockets


def open_socket(
    ctx: zmq.Context,
    kind: int,
    endpoint: str,
    bind: bool,
    security: CurveServer | CurveClient | None = None,
    linger_ms: int = 0,
) -> zmq.Socket:
    """The one place that creates sockets: explicit linger, CURVE keys or insecure-on-loopback, bind or connect."""
    if security is None:
        check_insecure_endpoint(endpoint)
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    try:
        apply_curve(sock, security)
        if bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        verb = "bind to" if bind else "connect to"
        raise TransportError(f"cannot {verb} {endpoint}: {exc}") from None
    return sock


def close_socket(sock: zmq.Socket | None) -> None:
    """Close without waiting for unsent messages."""
    if sock is not None and not sock.closed:
        sock.close(linger=0)


# --------------------------------------------------------------------------- client


@dataclass
class Client:
    """Lazy Pirate request/reply client for one channel.

    ``timeout_s`` bounds each attempt; ``retries`` is how many times a request is
    re-sent after a timeout. ``timeout_setting`` names the configuration key a
    user should raise, for the error message.
    """

    endpoint: str
    channel: Channel
    sender: Role
    timeout_s: float = 30.0
    retries: int = 2
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    timeout_setting: str = "--timeout"
    security: CurveClient | None = None
    ctx: zmq.Context = field(default_factory=zmq.Context.instance)
    _sock: zmq.Socket | None = field(default=None, init=False, repr=False)

    def call(self, body: Body, timeout_s: float | None = None) -> Body:
        """Send ``body`` and return the reply body; raise RemoteError on a typed error reply."""
        request = make_envelope(body, self.sender)
        reply = self._exchange(encode(request), request.header.id, timeout_s or self.timeout_s)
        if isinstance(reply.body, ErrorReply):
            raise RemoteError(reply.body, f"{self.channel.name} at {self.endpoint}")
        return reply.body

    def ping(self, timeout_s: float = 2.0) -> Pong:
        """One liveness probe with no retries."""
        saved = self.retries
        self.retries = 0
        try:
            reply = self.call(Ping(), timeout_s)
        finally:
            self.retries = saved
        if not isinstance(reply, Pong):
            raise UnexpectedReply(f"{self.endpoint} answered a ping with {type(reply).__name__}")
        return reply

    def close(self) -> None:
        close_socket(self._sock)
        self._sock = None

    def _exchange(self, frames: list[bytes], msg_id: str, timeout_s: float) -> Envelope:
        for _attempt in range(self.retries + 1):
            if self._sock is None:
                self._sock = open_socket(self.ctx, zmq.REQ, self.endpoint, bind=False, security=self.security)
            self._sock.send_multipart(frames)
            if self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
                reply = decode(self._sock.recv_multipart(), self.channel, "reply", self.max_bytes)
                if reply.header.correlation_id == msg_id:
                    return reply
                raise ProtocolError("validation", "reply does not answer this request", "correlation_id")
            log.warning("no reply from %s within %.1fs; reconnecting", self.endpoint, timeout_s)
            self.close()  # Lazy Pirate: a REQ socket that timed out cannot be reused.
        raise PeerUnavailable(
            f"{self.channel.name} at {self.endpoint} did not answer within {timeout_s:.0f}s "
            f"after {self.retries + 1} attempt(s); is it running? For long jobs raise {self.timeout_setting}."
        )


# --------------------------------------------------------------------------- server

@dataclass
class _Pending:
    identity: bytes
    request: Envelope


class Server:
    """Serves one channel on a ROUTER socket; ``handler`` runs in the thread that calls :meth:`serve`."""

    def __init__(
        self,
        endpoint: str,
        channel: Channel,
        role: Role,
        handler: Handler,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        security: CurveServer | None = None,
    ):
        self.endpoint = endpoint
        self.channel = channel
        self.role = role
        self.handler = handler
        self.max_bytes = max_bytes
        self.security = security
        self.stopping = threading.Event()
        self._ctx = zmq.Context()  # its own, so that its CURVE authenticator is its own too
        self._inbox: queue.Queue[_Pending] = queue.Queue()
        self._outbox: queue.Queue[tuple[str, Envelope]] = queue.Queue()
        self._in_progress: dict[str, bytes] = {}  # message id -> latest client identity
        self._recent: OrderedDict[str, list[bytes]] = OrderedDict()
        self._busy = threading.Event()
        self._io_error: BaseException | None = None
        self._bound = threading.Event()
        self._io = threading.Thread(target=self._io_loop, name=f"{role}-io", daemon=True)

    def start(self) -> None:
        """Bind and start the I/O thread; raises if binding failed."""
        self._io.start()
        self._bound.wait()
        if self._io_error is not None:
            raise self._io_error

    def serve(self) -> None:
        """Run the work loop until :meth:`stop` is called (e.g. by a signal handler)."""
        if not self._io.is_alive():
            self.start()
        while not self.stopping.is_set():
            try:
                pending = self._inbox.get(timeout=0.1)
            except queue.Empty:
                self._raise_io_error()
                continue
            self._outbox.put((pending.request.header.id, self._run(pending.request)))
        self._io.join(timeout=2)

    def stop(self) -> None:
        """Ask both loops to finish; safe to call from a signal handler."""
        self.stopping.set()

    def _run(self, request: Envelope) -> Envelope:
        self._busy.set()
        try:
            body = answer(self.handler, request.body)
        finally:
            self._busy.clear()
        return make_envelope(body, self.role, correlation_id=request.header.id)

    def _raise_io_error(self) -> None:
        if self._io_error is not None:
            raise TransportError(f"{self.role} I/O thread failed: {self._io_error}") from self._io_error

    # ----------------------------------------------------------------- I/O thread

    def _io_loop(self) -> None:
        sock, auth = None, None
        try:
            if self.security is not None:
                auth = start_authenticator(self._ctx, self.security)
            sock = open_socket(self._ctx, zmq.ROUTER, self.endpoint, bind=True, security=self.security)
            self._bound.set()
            while not self.stopping.is_set():
                if sock.poll(POLL_INTERVAL_MS, zmq.POLLIN):
                    self._on_frames(sock, sock.recv_multipart())
                self._flush_outbox(sock)
        except BaseException as exc:
            self._io_error = exc
            self._bound.set()
        finally:
            close_socket(sock)
            if auth is not None:
                auth.stop()
            self._ctx.term()

    def _on_frames(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        # ROUTER framing from a REQ peer: [identity, b"", header, body]
        if len(frames) < 2 or frames[1] != b"":
            log.warning("dropping a message without a REQ envelope")
            return
        identity, payload = frames[0], frames[2:]
        try:
            request = decode(payload, self.channel, "request", self.max_bytes)
        except ProtocolError as exc:
            header = peek_header(payload)
            self._send(sock, identity, make_envelope(exc.to_reply(), self.role, header.id if header else None))
            return
        msg_id = request.header.id
        if isinstance(request.body, Ping):
            self._send(sock, identity, make_envelope(Pong(role=self.role, busy=self._busy.is_set()), self.role, msg_id))
        elif msg_id in self._recent:
            sock.send_multipart([identity, b"", *self._recent[msg_id]])
        elif msg_id in self._in_progress:
            self._in_progress[msg_id] = identity  # a retry: answer the newest socket
        else:
            self._in_progress[msg_id] = identity
            self._inbox.put(_Pending(identity, request))

    def _flush_outbox(self, sock: zmq.Socket) -> None:
        while True:
            try:
                msg_id, reply = self._outbox.get_nowait()
            except queue.Empty:
                return
            frames = encode(reply)
            self._recent[msg_id] = frames
            while len(self._recent) > REPLY_CACHE_SIZE:
                self._recent.popitem(last=False)
            sock.send_multipart([self._in_progress.pop(msg_id), b"", *frames])

    def _send(self, sock: zmq.Socket, identity: bytes, reply: Envelope) -> None:
        sock.send_multipart([identity, b"", *encode(reply)])
