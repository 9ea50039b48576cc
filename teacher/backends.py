"""Teacher backends: where self-edit text comes from.

Every backend samples ``n`` completions for each prompt in one call, so that a
batched engine can serve many contexts at once.
"""

from __future__ import annotations

from typing import Protocol

import torch

from protocol.messages import SamplingSettings
from seal.models import load_model


class TeacherBackend(Protocol):
    """A source of self-edit text."""

    model_id: str

    def sample(self, prompts: list[str], n: int, sampling: SamplingSettings) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order."""
        ...


class TransformersTeacher:
    """An in-process transformers model (the CPU default)."""

    def __init__(self, model_id: str, device: str = "auto", batch_size: int = 4):
        self.model_id = model_id
        self.batch_size = batch_size
        self.model, self.tokenizer = load_model(model_id, device)

    def sample(self, prompts: list[str], n: int, sampling: SamplingSettings) -> list[list[str]]:
        torch.manual_seed(sampling.seed)
        out: list[list[str]] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._sample_batch(prompts[start : start + self.batch_size], n, sampling)
        return out

    @torch.no_grad()
    def _sample_batch(self, prompts: list[str], n: int, sampling: SamplingSettings) -> list[list[str]]:
        texts = [self._as_chat(p) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.model.device)
        output = self.model.generate(
            **batch,
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else None,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=n,
            pad_token_id=self.tokenizer.pad_token_id,
        )  # (B * n, T_prompt + T_new), the n samples of a prompt adjacent
        decoded = self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return [[d.strip() for d in decoded[i * n : (i + 1) * n]] for i in range(len(prompts))]

    def _as_chat(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt
