"""Closed-book answers from the base model or from stored adapters: batched, greedy.

Many adapters answer in one generation batch: with a peft model holding them all,
``adapter_names`` routes each row to its own adapter (``"__base__"``: no adapter),
so K candidates cost one batched pass per new token instead of K.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal.qa_format import clean_answer, question_prompt

BASE_ADAPTER = "__base__"
"""peft's name for "no adapter" in a mixed-adapter batch."""


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    adapter_names: list[str] | None = None,
) -> list[str]:
    """Greedy answers to ``questions``, in order, left-padded in batches.

    With ``adapter_names`` (one per question; ``model`` a peft model holding those adapters),
    row ``i`` is answered by adapter ``adapter_names[i]``. Rows are grouped by adapter, then by
    prompt length, so a batch mixes few adapters and wastes little padding.
    """
    prompts = [question_prompt(tokenizer, q) for q in questions]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    names = adapter_names or [BASE_ADAPTER] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (names[i], lengths[i]))
    answers: dict[int, str] = {}
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        routing = {"adapter_names": [names[i] for i in rows]} if adapter_names is not None else {}
        output = model.generate(
            **batch.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            **routing,
        )  # (B, T_prompt + T_new)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers |= {i: clean_answer(text) for i, text in zip(rows, texts, strict=True)}
    return [answers[i] for i in range(len(prompts))]
