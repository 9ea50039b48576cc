"""Teacher-forced answer likelihood: the dense signal that moves on small models.

The auditor computes it itself, on its own copy of the base model with the
candidate adapter loaded from the artifact store, because it needs the answer
key, and the key never leaves the auditor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal.qa_format import question_prompt


@torch.no_grad()
def answer_logliks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
) -> list[float]:
    """Mean per-token log-likelihood (nats) of each answer after its question's prompt."""
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        scores += _batch_logliks(model, tokenizer, pairs[start : start + batch_size])
    return scores


def _batch_logliks(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]
) -> list[float]:
    rows, answer_spans = [], []
    for question, answer in pairs:
        prompt_ids = tokenizer(question_prompt(tokenizer, question), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer.strip() or " ", add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids)
        answer_spans.append((len(prompt_ids), len(prompt_ids) + len(answer_ids)))
    width = max(len(r) for r in rows)
    device = next(model.parameters()).device
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T), right-padded
    attention = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits  # (B, T, V)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    scores = []
    for i, (begin, end) in enumerate(answer_spans):
        targets = input_ids[i, begin:end].to(device)  # token t is predicted at position t-1
        picked = logprobs[i, begin - 1 : end - 1].gather(-1, targets[:, None]).squeeze(-1)
        scores.append(picked.mean().item())
    return scores
