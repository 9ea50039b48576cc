"""Token-by-token generation for the HTTP endpoint: greedy or sampled, streamed as text deltas.

One request is one row with its own KV cache and its own random generator (``seed``), so requests never
share state; forward passes of concurrent requests are serialised by a lock and interleave token by token,
which keeps every stream moving. ``temperature`` 0 is greedy search.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class SamplingParams:
    """The OpenAI sampling parameters the endpoint honours."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Generation:
    """A generation under way: iterate for text deltas; afterwards ``finish_reason`` and token counts are set."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str | None = None
    deltas: Iterator[str] = field(default_factory=lambda: iter(()))

    def __iter__(self) -> Iterator[str]:
        return self.deltas

    def text(self) -> str:
        """The whole completion (consumes the generation)."""
        return "".join(self.deltas)


def pick_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """The next token from ``logits`` (vocab,): argmax at temperature 0, else top-p sampling."""
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float().cpu() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= params.top_p  # the nucleus keeps at least one token
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class Sampler:
    """Generates for one model at a time per call; ``step_lock`` serialises forward passes across requests."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.step_lock = threading.Lock()

    def generate(self, model: PreTrainedModel, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Start generating ``params.max_tokens`` at most after ``prompt_ids``; nothing runs until iterated."""
        generation = Generation(prompt_tokens=len(prompt_ids))
        generation.deltas = self._deltas(model, prompt_ids, params, generation)
        return generation

    @torch.no_grad()
    def _deltas(
        self, model: PreTrainedModel, prompt_ids: list[int], params: SamplingParams, out: Generation
    ) -> Iterator[str]:
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
        stop_ids = _eos_ids(model, self.tokenizer)
        holdback = max((len(s) for s in params.stop), default=1) - 1  # a stop string may be starting
        step_input, cache, tokens, sent = torch.tensor([prompt_ids], device=device), None, [], 0
        out.finish_reason = "length"
        for _ in range(params.max_tokens):
            with self.step_lock:
                step = model(input_ids=step_input, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache, token = step.past_key_values, pick_token(step.logits[0, -1], params, generator)
            if token in stop_ids:
                out.finish_reason = "stop"
                break
            tokens.append(token)
            out.completion_tokens = len(tokens)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = _first_stop(text, params.stop)
            if cut is not None:
                out.finish_reason = "stop"
                yield text[sent:cut]
                return
            ready = len(text) - holdback if not text.endswith("\ufffd") else sent  # wait for a whole character
            if ready > sent:
                yield text[sent:ready]
                sent = ready
            step_input = torch.tensor([[token]], device=device)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if len(text) > sent:
            yield text[sent:]


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Where the first stop string begins in ``text``, if any does."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The end-of-sequence ids: the generation config's, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos}
