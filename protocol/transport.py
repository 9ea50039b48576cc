"""Request/reply over ZeroMQ: a Lazy Pirate client and a serving loop that never dies on bad input.

Server side: an I/O thread owns the ROUTER socket. It decodes each request,
answers malformed ones with a typed :class:`ErrorReply` at once, answers
``Ping`` even while the worker is busy, and hands valid requests to the work
loop (the caller's thread) through a queue. A request re-sent by a client
after a timeout (same sender, message id and body) is not run twice: it is
attached to the run already under way, or answered from the cache of recent
replies. No frame stops the I/O thread: what cannot be decoded gets a typed
error, what cannot be served or encoded is logged and answered or dropped.
Over CURVE, each request is checked against the role its key authenticates
(:mod:`protocol.authorisation`); frames larger than ``max_bytes`` are cut off
by ZeroMQ (``MAXMSGSIZE``) before they are buffered.

Client side: a REQ socket per attempt. On timeout the socket is closed with
linger 0, reopened, and the same message re-sent, a bounded number of times;
then :class:`PeerUnavailable` names the setting to change. Both ends send ZMTP
heartbeats, which libzmq answers in its own threads even while a handler runs
for hours: a client waiting for a reply is told within seconds when the
connection is lost or the peer stops answering heartbeats (a dead, frozen or
unreachable host), however long its per-request timeout.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import zmq
from zmq.utils.monitor import recv_monitor_message

from protocol.authorisation import authorise
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
_CONNECTION_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


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


@dataclass(frozen=True)
class Heartbeat:
    """ZMTP heartbeats: a ping every ``interval_s``; a peer silent for ``timeout_s`` is disconnected."""

    interval_s: float = 1.0
    timeout_s: float = 5.0


def open_socket(
    ctx: zmq.Context,
    kind: int,
    endpoint: str,
    bind: bool,
    security: CurveServer | CurveClient | None = None,
    linger_ms: int = 0,
    *,
    max_message_bytes: int | None = None,
    heartbeat: Heartbeat | None = None,
    routing_id: bytes | None = None,
    monitor: bool = False,
) -> zmq.Socket:
    """The one place that creates sockets: explicit linger, CURVE keys or insecure-on-loopback, bind or connect.

    ``max_message_bytes`` disconnects a peer that sends a larger frame before it is buffered;
    ``heartbeat`` sets ZMTP heartbeats (and asks the peer to drop us after the same silence);
    ``routing_id`` keeps a client's identity across reconnects, which a ROUTER hands over to the
    newest connection; ``monitor`` attaches a monitor (``sock.get_monitor_socket()``) before
    connecting, so that no connection event is missed.
    """
    if security is None:
        check_insecure_endpoint(endpoint)
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    try:
        _set_options(sock, kind, max_message_bytes, heartbeat, routing_id)
        if monitor:
            sock.get_monitor_socket(_CONNECTION_EVENTS)
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


def _set_options(
    sock: zmq.Socket, kind: int, max_message_bytes: int | None, heartbeat: Heartbeat | None, routing_id: bytes | None
) -> None:
    if max_message_bytes is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    if heartbeat is not None:
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat.interval_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(heartbeat.timeout_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(heartbeat.timeout_s * 1000))
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting under its routing id takes it over


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
    user should raise, for the error message. An attempt also ends early when
    the connection is lost or the server stops answering ``heartbeat``s, or when
    no connection is made within the heartbeat timeout: a busy server answers
    heartbeats, a dead one does not.
    """

    endpoint: str
    channel: Channel
    sender: Role
    timeout_s: float = 30.0
    retries: int = 2
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    timeout_setting: str = "--timeout"
    security: CurveClient | None = None
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    ctx: zmq.Context = field(default_factory=zmq.Context.instance)
    _sock: zmq.Socket | None = field(default=None, init=False, repr=False)
    _monitor: zmq.Socket | None = field(default=None, init=False, repr=False)
    # Whether the open socket has completed its handshake: the monitor reports it once, so it is kept
    # across calls on the same socket (reset when a new one is opened).
    _connected: bool = field(default=False, init=False, repr=False)
    # One identity for every socket of this client, so that the server knows a retry from a new socket.
    _routing_id: bytes = field(default_factory=lambda: uuid.uuid4().bytes, init=False, repr=False)

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
        close_socket(self._monitor)
        self._sock, self._monitor = None, None

    def _exchange(self, frames: list[bytes], msg_id: str, timeout_s: float) -> Envelope:
        failure = ""
        for _attempt in range(self.retries + 1):
            outcome = self._attempt(frames, msg_id, timeout_s)
            if isinstance(outcome, Envelope):
                return outcome
            failure = outcome
            log.warning("%s %s; reconnecting", self.endpoint, failure)
            self.close()  # Lazy Pirate: a REQ socket that timed out cannot be reused.
        raise PeerUnavailable(
            f"{self.channel.name} at {self.endpoint} {failure} after {self.retries + 1} attempt(s); "
            f"is it running? For long jobs raise {self.timeout_setting}."
        )

    def _attempt(self, frames: list[bytes], msg_id: str, timeout_s: float) -> Envelope | str:
        """Send once and wait up to ``timeout_s`` for the reply to *this* request (or say why it failed).

        Every socket of this client shares one identity, so the late reply to a request it gave up on reaches
        its next socket. Such a reply is discarded and the request re-sent on a fresh socket: the server answers
        a re-sent request from its reply cache (or once it is done), never by running it twice.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            sock, monitor = self._open()
            sock.send_multipart(frames)
            outcome = self._await_reply(sock, monitor, max(deadline - time.monotonic(), 0.001))
            if not isinstance(outcome, Envelope) or outcome.header.correlation_id == msg_id:
                return outcome
            log.info("%s: discarded a late reply to an earlier request", self.endpoint)
            self.close()  # a REQ socket takes one reply per request: re-send ours on a new one

    def _open(self) -> tuple[zmq.Socket, zmq.Socket]:
        """This client's REQ socket and its monitor, opened if closed."""
        if self._sock is None or self._monitor is None:
            self._sock = open_socket(
                self.ctx,
                zmq.REQ,
                self.endpoint,
                bind=False,
                security=self.security,
                heartbeat=self.heartbeat,
                routing_id=self._routing_id,
                monitor=True,
            )
            self._monitor = self._sock.get_monitor_socket()  # attached by open_socket before connecting
            self._connected = False
        return self._sock, self._monitor

    def _await_reply(self, sock: zmq.Socket, monitor: zmq.Socket, timeout_s: float) -> Envelope | str:
        """The reply, or why this attempt failed: no answer in time, no connection, or the connection lost.

        Polls in heartbeat-sized slices, so that a lost connection ends the wait long before ``timeout_s``.
        """
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        started = time.monotonic()
        while (left := started + timeout_s - time.monotonic()) > 0:
            ready = dict(poller.poll(int(min(left, self.heartbeat.interval_s) * 1000)))
            if sock in ready:
                return decode(sock.recv_multipart(), self.channel, "reply", self.max_bytes)
            self._connected, lost = _connection_events(monitor, self._connected)
            if lost:
                return f"lost the connection (closed, or no heartbeat within {self.heartbeat.timeout_s:g}s)"
            if not self._connected and time.monotonic() - started > self.heartbeat.timeout_s:
                return f"could not be reached within {self.heartbeat.timeout_s:g}s (the heartbeat timeout)"
        return f"did not answer within {timeout_s:.0f}s"


def _connection_events(monitor: zmq.Socket, connected: bool) -> tuple[bool, bool]:
    """(connected, lost) after the monitor's pending events; a drop before the handshake is not a loss."""
    lost = False
    while monitor.poll(0, zmq.POLLIN):
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            connected = True
        elif event == zmq.EVENT_DISCONNECTED and connected:
            lost = True
    return connected, lost


# --------------------------------------------------------------------------- server

# (who asked: the authenticated role, or the connection's identity when insecure; message id; sha256 of the body)
_RequestKey = tuple[bytes, str, bytes]


@dataclass
class _Pending:
    key: _RequestKey
    request: Envelope


class Server:
    """Serves one channel on a ROUTER socket; ``handler`` runs in the thread that calls :meth:`serve`.

    With ``security`` (CURVE), each request must be one its key's role may send
    (:func:`protocol.authorisation.authorise`); with ``security=None`` (``--insecure``, loopback only)
    no caller is authenticated and every request is served, as before roles were bound to keys.
    """

    def __init__(
        self,
        endpoint: str,
        channel: Channel,
        role: Role,
        handler: Handler,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        security: CurveServer | None = None,
        heartbeat: Heartbeat | None = None,
    ):
        self.endpoint = endpoint
        self.channel = channel
        self.role = role
        self.handler = handler
        self.max_bytes = max_bytes
        self.security = security
        self.heartbeat = heartbeat or Heartbeat()
        self.stopping = threading.Event()
        self._ctx = zmq.Context()  # its own, so that its CURVE authenticator is its own too
        self._inbox: queue.Queue[_Pending] = queue.Queue()
        self._outbox: queue.Queue[tuple[_RequestKey, Envelope]] = queue.Queue()
        self._in_progress: dict[_RequestKey, bytes] = {}  # request -> latest client identity
        self._recent: OrderedDict[_RequestKey, list[bytes]] = OrderedDict()
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
            self._outbox.put((pending.key, self._run(pending.request)))
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
            sock = open_socket(
                self._ctx,
                zmq.ROUTER,
                self.endpoint,
                bind=True,
                security=self.security,
                max_message_bytes=self.max_bytes,
                heartbeat=self.heartbeat,
            )
            self._bound.set()
            while not self.stopping.is_set():
                if sock.poll(POLL_INTERVAL_MS, zmq.POLLIN):
                    self._on_frames(sock, sock.recv_multipart(copy=False))
                self._flush_outbox(sock)
        except BaseException as exc:
            self._io_error = exc
            self._bound.set()
        finally:
            close_socket(sock)
            if auth is not None:
                auth.stop()
            self._ctx.term()

    def _on_frames(self, sock: zmq.Socket, frames: list[zmq.Frame]) -> None:
        """Serve one request's frames; whatever goes wrong is logged, and the I/O thread goes on."""
        try:
            self._on_request(sock, frames)
        except Exception:
            log.exception("%s dropped a request it could not serve", self.role)

    def _on_request(self, sock: zmq.Socket, frames: list[zmq.Frame]) -> None:
        # ROUTER framing from a REQ peer: [identity, b"", header, body]
        if len(frames) < 3 or frames[1].bytes != b"":
            log.warning("dropping a message without a REQ envelope")
            return
        identity, payload = frames[0].bytes, [f.bytes for f in frames[2:]]
        caller = self._caller(frames[2])
        try:
            request = decode(payload, self.channel, "request", self.max_bytes)
            authorise(self.channel.name, caller, request.header)
        except ProtocolError as exc:
            header = peek_header(payload)
            self._send(sock, identity, make_envelope(exc.to_reply(), self.role, header.id if header else None))
            return
        if isinstance(request.body, Ping):
            pong = Pong(role=self.role, busy=self._busy.is_set())
            self._send(sock, identity, make_envelope(pong, self.role, request.header.id))
            return
        key = (caller.encode() if caller else identity, request.header.id, hashlib.sha256(payload[1]).digest())
        if key in self._recent:
            sock.send_multipart([identity, b"", *self._recent[key]])
        elif key in self._in_progress:
            self._in_progress[key] = identity  # a retry: answer the newest socket
        else:
            self._in_progress[key] = identity
            self._inbox.put(_Pending(key, request))

    def _caller(self, frame: zmq.Frame) -> str | None:
        """The role the ZAP handler authenticated for this connection; None when insecure."""
        return frame.get("User-Id") if self.security is not None else None

    def _flush_outbox(self, sock: zmq.Socket) -> None:
        while True:
            try:
                key, reply = self._outbox.get_nowait()
            except queue.Empty:
                return
            frames = self._encode(reply)
            self._recent[key] = frames
            while len(self._recent) > REPLY_CACHE_SIZE:
                self._recent.popitem(last=False)
            self._deliver(sock, self._in_progress.pop(key), frames)

    def _send(self, sock: zmq.Socket, identity: bytes, reply: Envelope) -> None:
        self._deliver(sock, identity, self._encode(reply))

    def _encode(self, reply: Envelope) -> list[bytes]:
        """The reply's frames; a reply that cannot be encoded becomes a typed internal error, never an exception."""
        try:
            return encode(reply)
        except Exception as exc:
            log.exception("%s could not encode a %s reply", self.role, reply.header.type)
            failed = ErrorReply(reason="internal", detail=f"the reply could not be encoded ({type(exc).__name__})")
            return encode(make_envelope(failed, self.role, reply.header.correlation_id))

    def _deliver(self, sock: zmq.Socket, identity: bytes, frames: list[bytes]) -> None:
        try:
            sock.send_multipart([identity, b"", *frames])
        except zmq.ZMQError as exc:  # e.g. the peer's queue is full: the client retries or times out
            log.warning("%s could not send a reply: %s", self.role, exc)
