"""Which backend a teacher spec names, and the factory that builds it.

``transformers:MODEL`` (also a bare MODEL: the default), ``vllm:MODEL``, ``openai:MODEL`` and
``anthropic:MODEL``. Building a backend checks it before any work starts (vllm installed, API key
set, server reachable, model known) and raises a one-line
:class:`library.backend_errors.BackendUnavailable` otherwise. The heavy imports (torch, vllm, the SDKs)
happen only for the backend asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

if TYPE_CHECKING:
    from teacher.backends import TeacherBackend
    from teacher.config import TeacherConfig

BackendKind = Literal["transformers", "vllm", "openai", "anthropic"]
KINDS: tuple[BackendKind, ...] = ("transformers", "vllm", "openai", "anthropic")
API_KINDS: tuple[BackendKind, ...] = ("openai", "anthropic")


@dataclass(frozen=True)
class BackendSpec:
    """A parsed teacher spec: the backend kind and the model it serves."""

    kind: BackendKind
    model: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}"


def parse_spec(spec: str) -> BackendSpec:
    """``kind:model`` or a bare model (transformers); ValueError names the known kinds."""
    kind, sep, model = spec.partition(":")
    if not sep:
        return BackendSpec("transformers", spec)
    if kind in KINDS:
        if not model.strip():
            raise ValueError(f"teacher spec {spec!r} names no model: write {kind}:MODEL")
        return BackendSpec(cast(BackendKind, kind), model)
    if Path(spec).expanduser().exists():  # a local folder whose name has a colon
        return BackendSpec("transformers", spec)
    raise ValueError(f"unknown teacher backend {kind!r} in {spec!r}: use one of {', '.join(k + ':' for k in KINDS)}")


def build_backend(config: TeacherConfig) -> TeacherBackend:
    """The teacher backend ``config.model`` names, checked and ready to sample."""
    spec = parse_spec(config.model)
    if spec.kind == "transformers":
        from teacher.backends import TransformersTeacher

        return TransformersTeacher(spec.model, config.device, config.dtype)
    if spec.kind == "vllm":
        from teacher.vllm_backend import VLLMTeacher

        return VLLMTeacher(spec.model, config.vllm)
    return _api_backend(spec, config)


def _api_backend(spec: BackendSpec, config: TeacherConfig) -> TeacherBackend:
    from library.api_common import APIConfig

    prices = None
    if config.api_price_in is not None and config.api_price_out is not None:
        prices = (config.api_price_in, config.api_price_out)
    settings = APIConfig(
        model=spec.model,
        base_url=config.base_url,
        timeout_s=config.api_timeout_s,
        retries=config.api_retries,
        concurrency=config.api_concurrency,
        prices=prices,
    )
    if spec.kind == "openai":
        from library.openai_backend import OpenAITeacher

        return OpenAITeacher(settings)
    from library.anthropic_backend import AnthropicTeacher

    return AnthropicTeacher(settings)


def check_backend(config: TeacherConfig) -> None:
    """Fail fast, in one line, on a backend that cannot work; cheap enough to run before starting roles.

    API backends are contacted (key, server, model); a vLLM teacher needs vllm installed; a local
    model is resolved (converted once if it is the embedded default).
    """
    spec = parse_spec(config.model)
    if spec.kind in API_KINDS:
        build_backend(config)
        return
    from library.models import resolve_model

    if spec.kind == "vllm":
        from library.backend_errors import BackendUnavailable
        from library.models import ModelLoadError
        from library.vllm_engine import require_vllm

        try:
            require_vllm(f"the teacher {spec}")
        except ModelLoadError as exc:
            raise BackendUnavailable(str(exc)) from None
    resolve_model(spec.model)
