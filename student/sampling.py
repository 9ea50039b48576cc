"""Generation for the HTTP endpoint: concurrent requests batched on one worker thread, streamed as text deltas.

Requests wait in a queue; at each step the worker turns the waiting ones into *groups*, one model (one
served version: never two versions in a group) and at most ``max_batch`` requests each, prefilled together
(left-padded), then runs one decoding step of every group in turn. A row has its own sampling parameters
and random generator (``seed``) and leaves its group at its end of sequence, its length, its stop string or
its caller's disconnect. A request that arrives while others decode starts at once in a group of its own,
so its first token waits for one step of each running group, not for their end. ``temperature`` 0 is
greedy search. Text is decoded on the
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
    seed: int
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
        request = _Request(model, prompt_ids, params, torch.Generator().manual_seed(seed), seed)
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
        groups: list[_Group] = []
        while True:
            for batch in self._take_waiting(block=not groups):
                groups.append(_Group(batch, _eos_ids(batch[0].model, self.tokenizer)))
            for group in list(groups):  # one step each: a new group's first token need not wait for the others
                try:
                    running = group.step()
                except Exception as exc:  # reported to the group's callers; the worker keeps serving
                    log.exception("generation failed")
                    group.fail(exc)
                    running = False
                if not running:
                    groups.remove(group)

    def _take_waiting(self, block: bool) -> list[list[_Request]]:
        """The waiting requests as batches of one model each (at most ``max_batch``); wait for one if ``block``."""
        with self._wake:
            if block:
                self._wake.wait_for(lambda: bool(self._waiting))
            waiting, self._waiting = self._waiting, []
        batches: list[list[_Request]] = []
        for request in waiting:
            batch = next((b for b in batches if b[0].model is request.model and len(b) < self.max_batch), None)
            if batch is None:
                batches.append([request])
            else:
                batch.append(request)
        return batches


class _Group:
    """Requests for one model decoding together: one KV cache (B rows), a row leaving when it ends."""

    def __init__(self, batch: list[_Request], stop_ids: set[int]):
        self.model, self.active, self.stop_ids = batch[0].model, list(batch), stop_ids
        self.device = next(self.model.parameters()).device
        inputs = {k: v.to(self.device) for k, v in suffix_batch([r.prompt_ids for r in batch], 0, 0).items()}
        self.mask, self.positions = inputs["attention_mask"], inputs["position_ids"][:, -1]  # (B, T), (B,)
        self.step_input = {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"]}
        self.cache, self.count = None, 0

    @torch.no_grad()
    def step(self) -> bool:
        """One forward pass and one token per row; False once every row has ended."""
        out = self.model(
            **self.step_input, attention_mask=self.mask, past_key_values=self.cache, use_cache=True, logits_to_keep=1
        )
        self.cache, self.count = out.past_key_values, self.count + 1
        chosen = [pick_token(out.logits[j, -1], r.params, r.generator) for j, r in enumerate(self.active)]
        keep = [j for j, r in enumerate(self.active) if _emit(r, chosen[j], self.stop_ids, self.count)]
        if not keep:
            return False
        if len(keep) < len(self.active):
            index = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(index)
            self.mask, self.positions = self.mask[index], self.positions[index]
            self.active, chosen = [self.active[j] for j in keep], [chosen[j] for j in keep]
        self.positions = self.positions + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.active), 1))], dim=1)  # (B, T + 1)
        tokens = torch.tensor(chosen, device=self.device)[:, None]
        self.step_input = {"input_ids": tokens, "position_ids": self.positions[:, None]}
        return True

    def fail(self, exc: Exception) -> None:
        for request in self.active:
            request.tokens.put(exc)


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
