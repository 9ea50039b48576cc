"""What the OpenAI and Anthropic teachers share: settings, the API key, errors in one line, concurrency.

Retries (rate limits, server errors, timeouts, dropped connections) are the official SDKs' own:
``max_retries`` attempts more with exponential backoff (0.5 s doubling to 8 s, with jitter) that
honours the server's ``retry-after``. What still fails afterwards becomes one
:class:`library.backend_errors.BackendRequestError` line naming the setting to change. The API key is read
from the environment (or handed in by the process that read it from its own key file: the auditor's judge
and reviewer), given to the SDK and nowhere else: every message passes through
:func:`library.backend_errors.redact` before it is raised. The teacher's backends and the auditor's API
models share this code, so it lives in the library.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar, TypeVar

from library.backend_errors import BackendRequestError, BackendUnavailable, redact
from library.completions import Completion, VersionKind, texts_of
from library.usage import price_per_mtok
from protocol.messages import SamplingConfig

CHECK_RETRIES = 1  # the start-up check fails fast: a server that is down should not cost minutes of backoff
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class APIConfig:
    """How to reach a hosted model; never holds the key (that stays in the environment)."""

    model: str
    base_url: str | None = None
    timeout_s: float = 60.0
    retries: int = 4
    concurrency: int = 4
    prices: tuple[float, float] | None = None  # USD per million (input, output) tokens; None: the list


class APITeacher(ABC):
    """What every API teacher does alike: settings, the key from the environment, prices, the SDK client.

    A subclass names its SDK (``kind``: the module and the spec prefix; ``provider``: its client class),
    its key variable, how to check the server (``check``, run at construction) and how to sample.
    """

    version_kind: VersionKind = "exemplars"  # cannot be fine-tuned here: ReST^EM grows an exemplar bank
    kind: ClassVar[str]  # "openai": the SDK module and the teacher spec's prefix
    provider: ClassVar[str]  # "OpenAI": the SDK's client class, and the name in messages
    key_variable: ClassVar[str]
    key_hint: ClassVar[str] = ""

    def __init__(self, settings: APIConfig, key: str | None = None) -> None:
        """Connect to the API and check key, server and model; errors are one BackendUnavailable line.

        ``key``: the API key, when the caller read it itself; None reads it from the environment.
        """
        self.settings = settings
        self.model_id = f"{self.kind}:{settings.model}"
        self._sdk = importlib.import_module(self.kind)  # imported only by the teacher that uses it
        self._key = key or api_key(self.key_variable, self.provider, self.key_hint)
        self._prices = price_per_mtok(settings.model, settings.prices)
        self.client = getattr(self._sdk, self.provider)(
            api_key=self._key, base_url=settings.base_url, timeout=settings.timeout_s, max_retries=settings.retries
        )
        self.check()

    @abstractmethod
    def check(self) -> None:
        """Raise BackendUnavailable unless the server answers, takes the key and knows the model."""

    @abstractmethod
    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """``n`` completions per prompt, in prompt order."""

    def sample(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order (a refusal gives an empty text)."""
        return texts_of(self.complete(prompts, n, sampling))


def api_key(variable: str, backend: str, hint: str = "") -> str:
    """The key in environment ``variable``, or a one-line BackendUnavailable saying to set it."""
    key = os.environ.get(variable, "").strip()
    if not key:
        raise BackendUnavailable(f"the {backend} teacher needs an API key: set {variable} in the environment{hint}")
    return key


def describe(exc: BaseException, sdk: ModuleType, settings: APIConfig, key: str, where: str) -> str:
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


def _status_reason(status: int, settings: APIConfig) -> str:
    if status in (401, 403):
        return f"HTTP {status}, the API key was rejected"
    if status == 404:
        return f"HTTP 404, model {settings.model!r} or the endpoint was not found"
    if status == 429:
        return f"HTTP 429, still rate limited after {_retries(settings)} (lower --api-concurrency)"
    if status >= 500:
        return f"HTTP {status}, server error after {_retries(settings)}"
    return f"HTTP {status}"


def _retries(settings: APIConfig) -> str:
    return f"{settings.retries} {'retry' if settings.retries == 1 else 'retries'}"


def _first_line(text: str, limit: int = 200) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def request_error(exc: BaseException, sdk: ModuleType, settings: APIConfig, key: str, where: str) -> Exception:
    """The BackendRequestError to raise for a call that failed mid-run."""
    return BackendRequestError(describe(exc, sdk, settings, key, where))


def map_ordered(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``concurrency`` calls in flight; the first error is raised."""
    if concurrency <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="teacher-api") as pool:
        return list(pool.map(fn, items))
