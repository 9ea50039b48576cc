"""Closed-book answers from the base model or from stored adapters: batched, greedy.

Many adapters answer in one generation batch: with a model holding them all
(:func:`library.lora.mixed_adapters`, or peft's), ``adapter_names`` routes each row
to its own adapter (``"__base__"``: no adapter), so K candidates share every
forward pass instead of taking one each.

The decoding loop is greedy search written out, to waste less than ``generate``:
the instruction every prompt starts with is computed once per adapter
(:mod:`library.shared_prefix`), and a row leaves the batch as soon as its answer is
settled: at end of sequence, or once the first line is complete, since only the
first line is kept (:func:`library.qa_format.clean_answer`). The answers are those
of ``generate(do_sample=False)`` followed by ``clean_answer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import BASE_ADAPTER, mixed_adapters
from library.qa_format import clean_answer, question_prompt
from library.shared_prefix import prefill, shared_prefix_length, suffix_batch

MIXED_BATCH_FACTOR = 8
"""A mixed-adapter batch holds this many times the configured questions per batch: rows share every pass."""


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    adapter_names: list[str] | None = None,
    instruction: str | None = None,
) -> list[str]:
    """Greedy answers to ``questions``, in order, in batches of ``batch_size`` rows.

    With ``adapter_names`` (one per question; ``model`` a mixed-adapter model holding those adapters),
    row ``i`` is answered by adapter ``adapter_names[i]``. Rows are grouped by adapter, then by
    prompt length, so a batch mixes few adapters and wastes little padding. ``instruction``: as in
    :func:`library.qa_format.question_prompt`.
    """
    prompts = [
        tokenizer(question_prompt(tokenizer, q, instruction), add_special_tokens=False)["input_ids"] for q in questions
    ]
    names = adapter_names or [BASE_ADAPTER] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (names[i], len(prompts[i])))
    answers: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        routed = [names[i] for i in rows] if adapter_names is not None else None
        texts = _greedy(model, tokenizer, [prompts[i] for i in rows], routed, max_new_tokens)
        answers |= dict(zip(rows, texts, strict=True))
    return [answers[i] for i in range(len(prompts))]


def answer_with_adapters(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folders: Mapping[str, Path],
    questions: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    instruction: str | None = None,
) -> list[list[str]]:
    """Every question answered by every adapter of ``folders`` (id -> peft folder), in one mixed batch.

    One list of answers per adapter, in the order of ``folders``; ``batch_size`` is the configured
    questions per batch (a mixed batch holds :data:`MIXED_BATCH_FACTOR` times as many rows).
    """
    rows = [(adapter_id, q) for adapter_id in folders for q in questions]
    with mixed_adapters(model, dict(folders)) as mixed:
        answers = generate_answers(
            mixed,
            tokenizer,
            [q for _, q in rows],
            max_new_tokens,
            batch_size * MIXED_BATCH_FACTOR,
            adapter_names=[a for a, _ in rows],
            instruction=instruction,
        )
    n = len(questions)
    return [answers[i * n : (i + 1) * n] for i in range(len(folders))]


def _greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    adapter_names: list[str] | None,
    max_new_tokens: int,
) -> list[str]:
    """Greedy continuations of ``prompts``, each row dropped from the batch once its answer is settled."""
    device = next(model.parameters()).device
    start = shared_prefix_length(prompts, [1] * len(prompts))
    cache = prefill(model, prompts[0][:start], adapter_names, len(prompts))
    batch = {k: v.to(device) for k, v in suffix_batch(prompts, start, tokenizer.pad_token_id).items()}
    stop_ids = _stop_ids(model, tokenizer)
    active = list(range(len(prompts)))  # rows still generating, in batch order
    tokens: list[list[int]] = [[] for _ in prompts]
    mask, positions = batch["attention_mask"], batch["position_ids"][:, -1]  # (b, T), (b,)
    step_input = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    for _ in range(max_new_tokens):
        routing = {"adapter_names": [adapter_names[i] for i in active]} if adapter_names is not None else {}
        out = model(
            **step_input, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1, **routing
        )
        cache, chosen = out.past_key_values, out.logits[:, -1].argmax(-1)  # chosen: (b,)
        keep = [j for j, row in enumerate(active) if _extend(tokenizer, tokens[row], chosen[j].item(), stop_ids)]
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions, chosen = mask[index], positions[index], chosen[index]
            active = [active[j] for j in keep]
        positions = positions + 1
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)  # (b, T + 1)
        step_input = {"input_ids": chosen[:, None], "position_ids": positions[:, None]}
    return [clean_answer(tokenizer.decode(row, skip_special_tokens=True)) for row in tokens]


def _extend(tokenizer: PreTrainedTokenizerBase, row: list[int], token: int, stop_ids: set[int]) -> bool:
    """Append ``token`` to ``row`` unless it ends the sequence; True while the answer may still change."""
    if token in stop_ids:
        return False
    row.append(token)
    text = tokenizer.decode(row, skip_special_tokens=True).lstrip()
    lines = text.splitlines(keepends=True)
    return not lines or lines[0] == lines[0].splitlines()[0]  # settled once its first line has ended


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The end-of-sequence ids greedy generation stops at: the generation config's, else the tokenizer's."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos}
