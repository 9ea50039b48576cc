"""Errors a teacher backend raises: each message is one line that says what to change."""

from __future__ import annotations


class TeacherBackendError(Exception):
    """A teacher backend that cannot serve; the message is one line naming the backend and the fix."""


class BackendUnavailable(TeacherBackendError):
    """Found before any work starts: server unreachable, API key missing, model unknown, vllm not installed."""


class BackendRequestError(TeacherBackendError):
    """A request that still failed after the configured retries (or got an answer that cannot be read)."""


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked, so no message or log line carries an API key."""
    return text.replace(secret, "***") if secret else text
