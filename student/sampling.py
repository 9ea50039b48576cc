"""Generation for the HTTP endpoint: concurrent requests batched on one worker thread, streamed as text deltas.

Requests wait in a queue; the worker takes every waiting request for the same model (the same served
version, never two versions in one batch), up to ``max_batch``, prefills them together (left-padded) and
decodes them step by step, each row with its own sampling parameters and random generator (``seed``), a row
leaving the batch at its end of sequence, its length, its stop string or its caller's disconnect. Requests
that arrive meanwhile form the next batch. ``temperature`` 0 is greedy search. Text is decoded on the
caller's side, which holds back what may be the start of a stop string or of a multi-byte character.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.shared_prefix import suffix_batch

log = logging.getLogger(__name__)
_END = -1  # on a request's token queue: no more tokens


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


@dataclass
class _Request:
    model: PreTrainedModel
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    tokens: queue.Queue = field(default_factory=queue.Queue)  # token ids, then _END (or an exception)
    done: bool = False  # set by the caller (stop string, disconnect): the worker drops the row


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
    """One worker thread generating for every request, in batches of one model each."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_batch: int = 16):
        self.tokenizer, self.max_batch = tokenizer, max_batch
        self._waiting: list[_Request] = []
        self._wake = threading.Condition()
        threading.Thread(target=self._work, name="seal-serve-sampler", daemon=True).start()

    def generate(self, model: PreTrainedModel, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Queue a generation of at most ``params.max_tokens`` after ``prompt_ids``; iterate it for text."""
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        request = _Request(model, prompt_ids, params, torch.Generator().manual_seed(seed))
        with self._wake:
            self._waiting.append(request)
            self._wake.notify()
        generation = Generation(prompt_tokens=len(prompt_ids))
        generation.deltas = self._deltas(request, generation)
        return generation

    def _deltas(self, request: _Request, out: Generation) -> Iterator[str]:
        """Text deltas from the worker's tokens: stop strings cut, partial characters held back."""
        stops = request.params.stop
        holdback = max((len(s) for s in stops), default=1) - 1  # a stop string may be starting
        tokens: list[int] = []
        sent, out.finish_reason = 0, "length"
        try:
            while (token := request.tokens.get()) != _END:
                if isinstance(token, BaseException):
                    raise token
                if token is None:  # end of sequence
                    out.finish_reason = "stop"
                    break
                tokens.append(token)
                out.completion_tokens = len(tokens)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                cut = _first_stop(text, stops)
                if cut is not None:
                    out.finish_reason = "stop"
                    yield text[sent:cut]
                    return
                ready = len(text) - holdback if not text.endswith("\ufffd") else sent  # a whole character
                if ready > sent:
                    yield text[sent:ready]
                    sent = ready
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if len(text) > sent:
                yield text[sent:]
        finally:
            request.done = True  # finished, stopped or abandoned by its caller: the worker drops the row

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._run(batch)
            except Exception as exc:  # reported to every caller of the batch; the worker keeps serving
                log.exception("generation failed")
                for request in batch:
                    request.tokens.put(exc)

    def _next_batch(self) -> list[_Request]:
        """Every waiting request for the first waiting one's model, up to ``max_batch``."""
        with self._wake:
            self._wake.wait_for(lambda: bool(self._waiting))
            model = self._waiting[0].model
            batch = [r for r in self._waiting if r.model is model][: self.max_batch]
            self._waiting = [r for r in self._waiting if all(r is not b for b in batch)]
        return batch

    @torch.no_grad()
    def _run(self, batch: list[_Request]) -> None:
        model = batch[0].model
        device = next(model.parameters()).device
        stop_ids = _eos_ids(model, self.tokenizer)
        inputs = {k: v.to(device) for k, v in suffix_batch([r.prompt_ids for r in batch], 0, 0).items()}
        mask, positions = inputs["attention_mask"], inputs["position_ids"][:, -1]  # (b, T), (b,)
        step_input = {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"]}
        active, cache, count = list(batch), None, 0
        while active:
            out = model(**step_input, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache, count = out.past_key_values, count + 1
            chosen = [pick_token(out.logits[j, -1], r.params, r.generator) for j, r in enumerate(active)]
            keep = [j for j, (r, t) in enumerate(zip(active, chosen, strict=True)) if _emit(r, t, stop_ids, count)]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                active, chosen = [active[j] for j in keep], [chosen[j] for j in keep]
            positions = positions + 1
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)  # (b, T + 1)
            step_input = {"input_ids": torch.tensor(chosen, device=device)[:, None], "position_ids": positions[:, None]}


def _emit(request: _Request, token: int, stop_ids: set[int], count: int) -> bool:
    """Hand ``token`` (the ``count``-th) to its caller; True while the row should go on generating."""
    if request.done:  # the caller stopped reading (stop string, disconnect)
        request.tokens.put(_END)
        return False
    if token in stop_ids:
        request.tokens.put(None)
        request.tokens.put(_END)
        return False
    request.tokens.put(token)
    if count >= request.params.max_tokens:
        request.tokens.put(_END)
        return False
    return True


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
