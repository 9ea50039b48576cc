"""The OpenAI teacher: self-edits from the chat completions API, OpenAI's or any compatible server.

Also the client of vLLM's OpenAI-compatible server (compose.yaml's ``vllm`` service): point
``base_url`` at it (``http://vllm:8000/v1``). One request per prompt asks for all ``n`` samples
(``n=k``), so the prompt is paid once; its token usage is shared evenly among the samples. A choice
that carries a ``refusal`` (or stops on the content filter) is a failed proposal, not an error.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from library.api_common import CHECK_RETRIES, APITeacher, describe, map_ordered, request_error
from library.backend_errors import BackendUnavailable
from library.completions import Completion
from library.usage import split_usage
from protocol.messages import SamplingConfig

log = logging.getLogger(__name__)
KEY_VARIABLE = "OPENAI_API_KEY"
SCHEMA_NAME = "self_edit"
"""The name a structured-output schema is sent under."""
KEY_HINT = " (a vLLM server started without --api-key accepts any value, e.g. EMPTY)"


class OpenAITeacher(APITeacher):
    """Self-edits from an OpenAI-compatible chat model; checks key, server and model on construction."""

    kind, provider, key_variable, key_hint = "openai", "OpenAI", KEY_VARIABLE, KEY_HINT

    def check(self) -> None:
        """Raise BackendUnavailable unless the server answers, takes the key and offers the model."""
        where = f"OpenAI teacher at {self.client.base_url}"
        try:
            offered = [m.id for m in self.client.with_options(max_retries=CHECK_RETRIES).models.list()]
        except self._sdk.NotFoundError:  # a compatible server without /models: the first request will tell
            log.warning("%s does not list its models; cannot check %r before sampling", where, self.settings.model)
            return
        except Exception as exc:  # the SDK's errors, and unreadable answers
            raise BackendUnavailable(describe(exc, self._sdk, self.settings, self._key, where)) from None
        if self.settings.model not in offered:
            some = ", ".join(sorted(offered)[:8]) or "none"
            raise BackendUnavailable(f"{where} does not offer model {self.settings.model!r} (it offers: {some})")

    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """``n`` completions per prompt, one request per prompt, ``concurrency`` requests in flight."""
        return map_ordered(lambda prompt: self._one(prompt, n, sampling), prompts, self.settings.concurrency)

    def complete_json(
        self, prompts: list[str], n: int, sampling: SamplingConfig, schema: dict[str, Any]
    ) -> list[list[Completion]]:
        """Like ``complete``, under OpenAI's structured outputs: ``response_format`` a strict JSON schema."""
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
        }
        one = partial(self._one, n=n, sampling=sampling, extra={"response_format": response_format})
        return map_ordered(one, prompts, self.settings.concurrency)

    def _one(
        self, prompt: str, n: int, sampling: SamplingConfig, extra: dict[str, Any] | None = None
    ) -> list[Completion]:
        try:
            reply = self.client.chat.completions.create(
                model=self.settings.model,
                messages=[{"role": "user", "content": prompt}],
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_completion_tokens=sampling.max_new_tokens,
                seed=sampling.seed,
                **(extra or {}),
            )
            return self._completions(reply, n)
        except Exception as exc:  # the SDK's errors after its retries, and unreadable answers
            raise request_error(exc, self._sdk, self.settings, self._key, self.model_id) from None

    def _completions(self, reply: Any, n: int) -> list[Completion]:
        choices = sorted(reply.choices, key=lambda c: c.index)
        if len(choices) != n:
            raise ValueError(f"asked for {n} choices, got {len(choices)}")
        usage = reply.usage
        shares = split_usage(usage.prompt_tokens, usage.completion_tokens, n, self._prices) if usage else [None] * n
        return [_completion(choice, share) for choice, share in zip(choices, shares, strict=True)]


def _completion(choice: Any, usage: Any) -> Completion:
    message = choice.message
    if getattr(message, "refusal", None):
        return Completion("", usage, refusal=message.refusal)
    if choice.finish_reason == "content_filter":
        return Completion("", usage, refusal="stopped by the content filter")
    return Completion((message.content or "").strip(), usage)
