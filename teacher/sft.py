"""ReST^EM's M-step: fine-tune the teacher on the self-edits the auditor rewarded.

Each example is a (prompt, self-edit) pair. The prompt is wrapped exactly as the
teacher wraps it when sampling (:func:`teacher.prompts.as_chat`), and the loss is
on the completion only: the prompt's tokens get label -100. The result is a LoRA
adapter on the teacher's base model, saved as an ordinary peft folder; every
teacher version is trained from the base model on its round's data, as in
ReST^EM (no drift from stacking versions).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import save_portable
from teacher.prompts import as_chat
from teacher.restem_config import SFTSettings

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SFTResult:
    """A trained teacher adapter in a temporary folder, and how training went."""

    folder: Path
    losses: list[float]  # mean completion loss per epoch
    steps: int
    seconds: float


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str, max_length: int) -> dict:
    """Input ids and labels of one pair: the prompt's labels masked, the completion's kept, EOS appended."""
    prompt_ids = tokenizer(as_chat(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    completion_ids = [*tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    room = max(max_length - len(completion_ids), 0)
    prompt_ids = prompt_ids[-room:] if room else []  # keep the prompt's end: the passage and the instruction tail
    ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}


def train_teacher_adapter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    base_model: str,
    settings: SFTSettings,
) -> SFTResult:
    """Train a fresh LoRA on ``pairs`` and save it to a temporary folder; ``model`` is left as it was."""
    if not pairs:
        raise ValueError("no (prompt, self-edit) pairs to train the teacher on")
    started = time.perf_counter()
    examples = [tokenize_pair(tokenizer, p, c, settings.max_length) for p, c in pairs]
    torch.manual_seed(settings.seed)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )
    peft_model = get_peft_model(model, config)
    try:
        losses, steps = _fit(peft_model, examples, settings, tokenizer.pad_token_id)
        folder = save_portable(peft_model, base_model, "seal-teacher-")
    finally:
        peft_model.unload()
    return SFTResult(folder, losses, steps, time.perf_counter() - started)


def _fit(model, examples: list[dict], settings: SFTSettings, pad_id: int) -> tuple[list[float], int]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    order = random.Random(settings.seed)
    device = next(model.parameters()).device
    model.train()
    epoch_losses, steps = [], 0
    for _ in range(settings.epochs):
        indices = list(range(len(examples)))
        order.shuffle(indices)
        losses = []
        for start in range(0, len(indices), settings.batch_size):
            batch = _collate([examples[i] for i in indices[start : start + settings.batch_size]], pad_id)
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
        epoch_losses.append(sum(losses) / len(losses))
    model.eval()
    return epoch_losses, steps


def _collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; padding is masked from attention and loss."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        attention[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
