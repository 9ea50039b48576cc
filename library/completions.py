"""What a text model's answer is, whoever serves it: a completion with its usage, or a refusal.

Shared by the teacher's backends (self-edits) and the auditor's API models (the judge, the reviewer):
both only need ``complete``, so both take any :class:`Completer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from protocol.messages import SamplingConfig, Usage


@dataclass(frozen=True)
class Completion:
    """One sampled text; ``refusal`` says why the model declined (``text`` is then empty)."""

    text: str
    usage: Usage | None = None
    refusal: str | None = None


VersionKind = Literal["lora", "exemplars"]
"""How ReST^EM improves a teacher backend: LoRA versions (a local model) or exemplar banks (an API model)."""


class Completer(Protocol):
    """Anything that completes prompts: ``n`` completions per prompt, in prompt order."""

    model_id: str

    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """``n`` completions per prompt, in prompt order."""
        ...


def texts_of(completions: list[list[Completion]]) -> list[list[str]]:
    """The texts of ``complete``'s answer (a refusal gives an empty text): ``sample`` for backends that complete."""
    return [[c.text for c in row] for row in completions]
