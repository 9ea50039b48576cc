"""Teacher-forced answer likelihood: the dense signal that moves on small models.

The auditor computes it itself, on its own copy of the base model with the
candidate adapter loaded from the artifact store, because it needs the answer
key, and the key never leaves the auditor.

:func:`score_models` is what the auditor computes, and what the knowledge bench measures: every
model's likelihoods in one batched pass. Many adapters are scored in one batched forward: with a
model holding them all (:func:`library.lora.mixed_adapters`, or peft's), ``adapter_names`` routes
each row to its own adapter (``"__base__"``: none). The instruction all prompts share is computed once per adapter
(:mod:`library.shared_prefix`); rows are sorted by length and left-padded, so every
answer ends at the last position and the output head runs only there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from library.datasets import QAItem
from library.lora import BASE_ADAPTER, mixed_adapters
from library.qa_format import question_prompt
from library.shared_prefix import prefill, select_rows, shared_prefix_length, suffix_batch

__all__ = ["BASE_ADAPTER", "MIXED_BATCH_ROWS", "ModelScores", "answer_logliks", "score_models"]
MIXED_BATCH_ROWS = 32
"""Rows per forward pass when many models are scored together."""


@dataclass(frozen=True)
class ModelScores:
    """One model's likelihoods (mean per-token log-likelihood, nats)."""

    gold: list[float]
    """Per τ question: the best over its gold answers."""
    pairs: list[float]
    """Per extra (question, answer) pair, in order (the auditor's: the base model's retention answers)."""


def score_models(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    models: list[str | None],
    folders: Mapping[str, Path],
    tau: list[QAItem],
    pairs: list[tuple[str, str]] | None = None,
    instruction: str | None = None,
) -> dict[str | None, ModelScores]:
    """Gold-answer likelihoods on τ and those of ``pairs``, under each of ``models``, in one batched pass.

    ``models`` are adapter ids, found in ``folders`` (id -> peft folder), and None for the base model;
    each row is routed to its own adapter on ``model`` (:func:`library.lora.mixed_adapters`). ``instruction``: the
    answer instruction the answers were given under (:func:`library.qa_format.question_prompt`).
    """
    golds = [(q.question, a) for q in tau for a in q.answers]
    rows = golds + (pairs or [])  # scored for every model, in this order
    adapters = [m for m in models if m is not None]
    if adapters:
        names = [m if m is not None else BASE_ADAPTER for m in models for _ in rows]
        with mixed_adapters(model, {a: folders[a] for a in adapters}) as mixed:
            flat = answer_logliks(mixed, tokenizer, rows * len(models), MIXED_BATCH_ROWS, names, instruction)
    else:
        flat = answer_logliks(model, tokenizer, rows * len(models), MIXED_BATCH_ROWS, instruction=instruction)
    scores = {}
    for k, model_id in enumerate(models):
        logliks = iter(flat[k * len(rows) : (k + 1) * len(rows)])
        gold = [max(next(logliks) for _ in q.answers) for q in tau]
        scores[model_id] = ModelScores(gold, list(logliks))
    return scores


@torch.no_grad()
def answer_logliks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
    adapter_names: list[str] | None = None,
    instruction: str | None = None,
) -> list[float]:
    """Mean per-token log-likelihood (nats) of each answer after its question's prompt, in order.

    With ``adapter_names`` (one per pair; ``model`` a mixed-adapter model holding those adapters,
    :func:`library.lora.mixed_adapters` or peft's), pair ``i`` is scored by adapter ``adapter_names[i]``.
    ``instruction``: as in :func:`library.qa_format.question_prompt`.
    """
    rows = [_encode(tokenizer, question, answer, instruction) for question, answer in pairs]
    ids = [row for row, _ in rows]
    names = adapter_names or [BASE_ADAPTER] * len(rows)
    models = list(dict.fromkeys(names))
    # The shared instruction is computed once per model for the whole call; each row keeps its last prompt
    # token, whose logits predict the first answer token.
    start = shared_prefix_length(ids, [n + 1 for _, n in rows])
    prefix = prefill(model, ids[0][:start], models if adapter_names is not None else None, len(models))
    order = sorted(range(len(rows)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    scores: dict[int, float] = {}
    for first in range(0, len(order), batch_size):
        chunk = sorted(order[first : first + batch_size], key=lambda i: names[i])  # each adapter's rows contiguous
        routing = {"adapter_names": [names[i] for i in chunk]} if adapter_names is not None else {}
        cache = select_rows(prefix, [models.index(names[i]) for i in chunk])
        batch_scores = _batch_logliks(model, [rows[i] for i in chunk], start, cache, tokenizer.pad_token_id, routing)
        scores |= dict(zip(chunk, batch_scores, strict=True))
    return [scores[i] for i in range(len(rows))]


def _encode(
    tokenizer: PreTrainedTokenizerBase, question: str, answer: str, instruction: str | None
) -> tuple[list[int], int]:
    """Token ids of prompt + answer, and the answer's token count."""
    prompt_ids = tokenizer(question_prompt(tokenizer, question, instruction), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer.strip() or " ", add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(answer_ids)


def _batch_logliks(
    model: PreTrainedModel,
    rows: list[tuple[list[int], int]],
    start: int,
    cache: Cache | None,
    pad_id: int,
    routing: dict[str, list[str]],
) -> list[float]:
    """Scores of one batch whose first ``start`` tokens are in ``cache`` (one row per row)."""
    ids = [row for row, _ in rows]
    answer_lengths = [n for _, n in rows]
    device = next(model.parameters()).device
    batch = suffix_batch(ids, start, pad_id)  # left-padded: every answer ends at the last position
    keep = max(answer_lengths) + 1  # positions whose logits we need: those predicting an answer token
    logits = model(
        **{k: v.to(device) for k, v in batch.items()},
        past_key_values=cache,
        use_cache=cache is not None,
        logits_to_keep=keep,
        **routing,
    ).logits  # (B, keep, V): the last `keep` positions
    logprobs = F.log_softmax(logits.float(), dim=-1)
    scores = []
    for i, n in enumerate(answer_lengths):
        targets = batch["input_ids"][i, -n:].to(device)  # the answer: (n,)
        picked = logprobs[i, keep - n - 1 : keep - 1].gather(-1, targets[:, None]).squeeze(-1)  # token t from t-1
        scores.append(picked.mean().item())
    return scores
