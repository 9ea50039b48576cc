"""Closed-book answers from the base model or from stored adapters: batched, greedy."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal.qa_format import clean_answer, question_prompt


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to ``questions``, in order, left-padded in batches."""
    answers: list[str] = []
    device = next(model.parameters()).device
    for start in range(0, len(questions), batch_size):
        prompts = [question_prompt(tokenizer, q) for q in questions[start : start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )  # (B, T_prompt + T_new)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers += [clean_answer(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers
