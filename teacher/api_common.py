"""What the OpenAI and Anthropic teachers share: settings, the API key, errors in one line, concurrency.

Retries (rate limits, server errors, timeouts, dropped connections) are the official SDKs' own:
``max_retries`` attempts more with exponential backoff (0.5 s doubling to 8 s, with jitter) that
honours the server's ``retry-after``. What still fails afterwards becomes one
:class:`teacher.errors.BackendRequestError` line naming the setting to change. The API key is read
from the environment only, handed to the SDK and nowhere else: every message passes through
:func:`teacher.errors.redact` before it is raised.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

from teacher.errors import BackendRequestError, BackendUnavailable, redact

CHECK_RETRIES = 1  # the start-up check fails fast: a server that is down should not cost minutes of backoff
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class APISettings:
    """How to reach a hosted model; never holds the key (that stays in the environment)."""

    model: str
    base_url: str | None = None
    timeout_s: float = 60.0
    retries: int = 4
    concurrency: int = 4
    prices: tuple[float, float] | None = None  # USD per million (input, output) tokens; None: the list


def api_key(variable: str, backend: str, hint: str = "") -> str:
    """The key in environment ``variable``, or a one-line BackendUnavailable saying to set it."""
    key = os.environ.get(variable, "").strip()
    if not key:
        raise BackendUnavailable(f"the {backend} teacher needs an API key: set {variable} in the environment{hint}")
    return key


def describe(exc: BaseException, sdk: ModuleType, settings: APISettings, key: str, where: str) -> str:
    """One line saying why an SDK call failed and what to change, with the key masked."""
    if isinstance(exc, sdk.APITimeoutError):
        why = f"no answer within {settings.timeout_s:g} s, {_retries(settings)} (raise --api-timeout-s)"
    elif isinstance(exc, sdk.APIConnectionError):
        why = f"cannot connect, {_retries(settings)} (is the server up? check --base-url)"
    elif isinstance(exc, sdk.APIStatusError):
        why = _status_reason(exc.status_code, settings)
        detail = _first_line(getattr(exc, "message", "") or str(exc))
        why += f": {detail}" if detail else ""
    elif isinstance(exc, ValueError | TypeError | AttributeError | KeyError | IndexError):
        why = f"the answer could not be read ({type(exc).__name__}: {_first_line(str(exc))})"
    else:
        why = f"{type(exc).__name__}: {_first_line(str(exc))}"
    return redact(f"{where}: {why}", key)


def _status_reason(status: int, settings: APISettings) -> str:
    if status in (401, 403):
        return f"HTTP {status}, the API key was rejected"
    if status == 404:
        return f"HTTP 404, model {settings.model!r} or the endpoint was not found"
    if status == 429:
        return f"HTTP 429, still rate limited after {_retries(settings)} (lower --api-concurrency)"
    if status >= 500:
        return f"HTTP {status}, server error after {_retries(settings)}"
    return f"HTTP {status}"


def _retries(settings: APISettings) -> str:
    return f"{settings.retries} {'retry' if settings.retries == 1 else 'retries'}"


def _first_line(text: str, limit: int = 200) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def request_error(exc: BaseException, sdk: ModuleType, settings: APISettings, key: str, where: str) -> Exception:
    """The BackendRequestError to raise for a call that failed mid-run."""
    return BackendRequestError(describe(exc, sdk, settings, key, where))


def map_ordered(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``concurrency`` calls in flight; the first error is raised."""
    if concurrency <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="teacher-api") as pool:
        return list(pool.map(fn, items))
