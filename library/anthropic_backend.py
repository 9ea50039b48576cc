"""The Anthropic teacher: self-edits from the Messages API.

The Messages API returns one sample per request, so k self-edits for m contexts are k·m requests,
``concurrency`` of them in flight. Of the sampling settings only ``max_new_tokens`` is sent: the
current Messages API (SDK 2.x) takes no temperature, top_p or seed, so the model samples with its own
settings and samples are not reproducible; the settings recorded with each self-edit are the
configured ones. A reply that stops with ``stop_reason == "refusal"`` is a failed proposal, not an error.
"""

from __future__ import annotations

import json
from typing import Any

from library.api_common import CHECK_RETRIES, APITeacher, describe, map_ordered, request_error
from library.backend_errors import BackendUnavailable
from library.completions import Completion
from library.usage import usage
from protocol.messages import SamplingConfig

KEY_VARIABLE = "ANTHROPIC_API_KEY"
TOOL_NAME = "self_edit"
"""The tool a structured answer is forced into."""


class AnthropicTeacher(APITeacher):
    """Self-edits from a Claude model; checks key, server and model on construction."""

    kind, provider, key_variable = "anthropic", "Anthropic", KEY_VARIABLE

    def check(self) -> None:
        """Raise BackendUnavailable unless the server answers, takes the key and knows the model."""
        where = f"Anthropic teacher at {self.client.base_url}"
        try:
            self.client.with_options(max_retries=CHECK_RETRIES).models.retrieve(self.settings.model)
        except self._sdk.NotFoundError:
            raise BackendUnavailable(f"{where} does not know model {self.settings.model!r}") from None
        except Exception as exc:  # the SDK's errors, and unreadable answers
            raise BackendUnavailable(describe(exc, self._sdk, self.settings, self._key, where)) from None

    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """``n`` completions per prompt: one request each, ``concurrency`` in flight."""
        jobs = [prompt for prompt in prompts for _ in range(n)]
        flat = map_ordered(lambda prompt: self._one(prompt, sampling), jobs, self.settings.concurrency)
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def complete_json(
        self, prompts: list[str], n: int, sampling: SamplingConfig, schema: dict[str, Any]
    ) -> list[list[Completion]]:
        """Like ``complete``, the answer forced into a tool call whose input schema is ``schema``; the tool's
        input, as JSON, is the completion."""
        tool = {"name": TOOL_NAME, "description": "Record the self-edit.", "input_schema": schema}
        extra = {"tools": [tool], "tool_choice": {"type": "tool", "name": TOOL_NAME}}
        jobs = [prompt for prompt in prompts for _ in range(n)]
        flat = map_ordered(lambda prompt: self._one(prompt, sampling, extra), jobs, self.settings.concurrency)
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _one(self, prompt: str, sampling: SamplingConfig, extra: dict[str, Any] | None = None) -> Completion:
        try:
            reply = self.client.messages.create(
                model=self.settings.model,
                max_tokens=sampling.max_new_tokens,
                messages=[{"role": "user", "content": prompt}],
                **(extra or {}),
            )
            return self._completion(reply)
        except Exception as exc:  # the SDK's errors after its retries, and unreadable answers
            raise request_error(exc, self._sdk, self.settings, self._key, self.model_id) from None

    def _completion(self, reply: Any) -> Completion:
        spent = usage(reply.usage.input_tokens, reply.usage.output_tokens, self._prices)
        if reply.stop_reason == "refusal":
            return Completion("", spent, refusal=_text(reply) or "the model declined (stop_reason: refusal)")
        return Completion(_text(reply), spent)


def _text(reply: Any) -> str:
    """The reply's text; for a forced tool call, the tool's input as JSON."""
    tool_input = next((block.input for block in reply.content if block.type == "tool_use"), None)
    if tool_input is not None:
        return json.dumps(tool_input)
    return "".join(block.text for block in reply.content if block.type == "text").strip()
