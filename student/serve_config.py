"""Settings of ``seal serve``, the OpenAI-compatible endpoint over the served stack: data, apart from the server."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from library.model_specs import DEFAULT_MODEL, DTypeName
from library.vllm_engine import VLLMConfig

API_KEYS_ENV = "SEAL_API_KEYS"
"""Environment variable of accepted API keys (comma- or space-separated)."""


class ServeError(Exception):
    """``seal serve`` cannot start as configured (the message says what to change)."""


class ServeConfig(BaseModel):
    """Everything ``seal serve`` needs to start."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Base model: the student's (the adapters were trained on it).")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda'.")
    dtype: DTypeName = Field("auto", description="Weights' dtype: 'auto', 'float32' or 'bfloat16'.")
    store: Path = Field(Path("runs/store"), description="The student's artifact store; its served/ holds the registry.")
    host: str = Field("127.0.0.1", description="Address to bind: loopback unless you mean to expose it (use TLS).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free one).")
    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="What generates: 'transformers' (the CPU default; the stack as peft adapters on a model copy) "
        "or 'vllm' (one engine, the stack as one LoRA of summed rank; needs vllm and --vllm.max-lora-rank at "
        "least the stack's summed rank).",
    )
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="vLLM engine settings (--backend vllm).")
    served_model_name: str = Field("seal", description="The model id clients name in requests and /v1/models lists.")
    api_keys_file: Path | None = Field(
        None, description=f"File of accepted bearer keys, one a line (also ${API_KEYS_ENV}); required unless set."
    )
    verify_keys: Path | None = Field(
        None,
        description="Key folder with the auditor's public key (auditor.sign.pub): serve a stack only when the "
        "registry history holds each adapter's signed accepting verdict (else 503).",
    )
    shadow: str | None = Field(
        None,
        description="Shadow deployment: a candidate adapter (id, in the store) that answers every live request "
        "on top of the served stack, its answers logged to --shadow-log, never returned.",
    )
    shadow_log: Path = Field(Path("shadow.jsonl"), description="Where --shadow logs both answers side by side.")
    default_max_tokens: int = Field(256, ge=1, description="Completion tokens when a request sets no max_tokens.")
    max_tokens_limit: int = Field(2048, ge=1, description="The most completion tokens one request may ask for.")


def load_api_keys(file: Path | None, environ: dict[str, str] | None = None) -> frozenset[str]:
    """The accepted keys: those in ``file`` (one a line, ``#`` comments) and in ``$SEAL_API_KEYS``.

    Raises ServeError when there is none: the endpoint never runs open.
    """
    env = os.environ if environ is None else environ
    keys = set(env.get(API_KEYS_ENV, "").replace(",", " ").split())
    if file is not None:
        if not file.exists():
            raise ServeError(f"--api-keys-file {file} does not exist")
        keys |= {line.split("#")[0].strip() for line in file.read_text().splitlines()} - {""}
    if not keys:
        raise ServeError(f"no API keys: set {API_KEYS_ENV} or --api-keys-file (one key a line)")
    return frozenset(keys)


def create_api_key_file(file: Path) -> str:
    """Write a new random key into ``file`` (owner-only) if it does not exist; return the file's first key."""
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"sk-seal-{secrets.token_urlsafe(24)}\n")
    return next(line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#"))
