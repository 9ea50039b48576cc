"""Serving one channel's requests: a handler table checked against the channel, and errors as data.

A service declares one handler per request type of its channel. :class:`Dispatcher` checks the
table against the channel's request union when it is built, so a request type without a handler
fails at start-up, not at the first request. :func:`answer` runs a handler and turns any failure
into a typed :class:`ErrorReply`: the ZeroMQ server and the in-process link both serve through it,
so a peer sees the same replies in and out of process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from protocol.codec import Channel, ProtocolError
from protocol.messages import Body, ErrorReply, Ping

log = logging.getLogger(__name__)

Handler = Callable[[Any], Body]


class HandlerTableError(Exception):
    """A service's handler table does not match its channel's requests."""


class Dispatcher:
    """Routes each request body to the handler for its type; built once per service."""

    def __init__(self, channel: Channel, handlers: Mapping[type[Body], Handler]):
        expected = channel.type_tags("request") - {Ping.model_fields["type"].default}  # the I/O side answers pings
        given = {kind.model_fields["type"].default: kind for kind in handlers}
        missing, extra = expected - set(given), set(given) - expected
        if missing or extra:
            raise HandlerTableError(
                f"the {channel.name} service's handlers do not match its channel: "
                f"missing {sorted(missing) or 'none'}, not on the channel {sorted(extra) or 'none'}"
            )
        self.channel = channel
        self._handlers = dict(handlers)

    def __call__(self, request: Body) -> Body:
        handler = self._handlers.get(type(request))
        if handler is None:
            name = type(request).__name__
            raise ProtocolError("unsupported", f"the {self.channel.name} service does not serve {name}")
        return handler(request)


def answer(handler: Callable[[Body], Body], request: Body) -> Body:
    """The handler's reply, or a typed error: a failing request must never take the service down."""
    try:
        return handler(request)
    except ProtocolError as exc:
        return exc.to_reply()
    except Exception as exc:
        log.exception("handler failed on %s", type(request).__name__)
        return ErrorReply(reason="internal", detail=f"{type(exc).__name__}: {exc}")
