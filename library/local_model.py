"""A local transformers model that completes prompts: the teacher's default backend and the auditor's local reviewer.

A prompt is given as one user turn (:func:`library.qa_format.as_chat`); ``n`` samples per prompt are drawn in batches.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from library.completions import Completion
from library.models import DTypeName, load_model
from library.qa_format import as_chat
from protocol.messages import SamplingConfig


class LocalModel:
    """An in-process transformers model; ``model`` is what samples (a subclass may put an adapter on it)."""

    def __init__(self, model_id: str, device: str = "auto", dtype: DTypeName = "auto", batch_size: int = 4):
        self.model_id = model_id
        self.batch_size = batch_size
        self.base_model, self.tokenizer = load_model(model_id, device, dtype)
        self.model: PreTrainedModel | PeftModel = self.base_model

    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """``sample``'s texts as completions (a local model never refuses; usage is not counted here)."""
        return [[Completion(text) for text in row] for row in self.sample(prompts, n, sampling)]

    def sample(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order."""
        torch.manual_seed(sampling.seed)
        out: list[list[str]] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._sample_batch(prompts[start : start + self.batch_size], n, sampling)
        return out

    @torch.no_grad()
    def _sample_batch(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[str]]:
        texts = [as_chat(self.tokenizer, p) for p in prompts]
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
