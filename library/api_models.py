"""An API model that a role talks to on its own behalf (the auditor's judge and reviewer): settings and key.

The key is read here, in the process that uses the model, from a key file or an environment variable;
it is handed to the SDK and nowhere else (never logged, never put in a message, a config file or the
ledger: configurations name the file or the variable, not the key).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from library.api_common import APIConfig, APITeacher
from library.backend_errors import BackendUnavailable

DEFAULT_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class APIModelConfig(BaseModel):
    """Where an API model is and how to authenticate; the key itself never appears here."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="openai:MODEL (OpenAI or any compatible server) or anthropic:MODEL.")
    base_url: str | None = Field(None, description="API base URL (OpenAI-compatible servers: ending in /v1).")
    key_file: Path | None = Field(None, description="File holding the API key, read by this process only.")
    key_env: str | None = Field(
        None, description="Environment variable holding the API key; default OPENAI_API_KEY / ANTHROPIC_API_KEY."
    )
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one request.")
    retries: int = Field(2, ge=0, description="Retries of a failed request (rate limits, server errors, timeouts).")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")

    def kind(self) -> str:
        """``openai`` or ``anthropic``; ValueError for another prefix."""
        kind, sep, model = self.model.partition(":")
        if not sep or kind not in DEFAULT_KEY_VARIABLES or not model:
            raise ValueError(f"API model {self.model!r}: write openai:MODEL or anthropic:MODEL")
        return kind


def read_key(config: APIModelConfig) -> str:
    """The API key from ``key_file``, else from ``key_env`` (or the provider's variable); one line if missing."""
    if config.key_file is not None:
        try:
            key = config.key_file.read_text().strip()
        except OSError as exc:
            raise BackendUnavailable(f"cannot read the API key file {config.key_file}: {exc.strerror}") from None
        if not key:
            raise BackendUnavailable(f"the API key file {config.key_file} is empty")
        return key
    variable = config.key_env or DEFAULT_KEY_VARIABLES[config.kind()]
    key = os.environ.get(variable, "").strip()
    if not key:
        raise BackendUnavailable(f"{config.model} needs an API key: set {variable} or give a key file")
    return key


def connect(config: APIModelConfig) -> APITeacher:
    """A checked client of the model (server up, key taken, model known), or one BackendUnavailable line."""
    kind = config.kind()
    settings = APIConfig(
        model=config.model.partition(":")[2],
        base_url=config.base_url,
        timeout_s=config.timeout_s,
        retries=config.retries,
        concurrency=config.concurrency,
    )
    if kind == "openai":
        from library.openai_backend import OpenAITeacher

        return OpenAITeacher(settings, read_key(config))
    from library.anthropic_backend import AnthropicTeacher

    return AnthropicTeacher(settings, read_key(config))
