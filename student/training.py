"""Turning a self-edit into a LoRA adapter: the student's inner-loop update.

A job's training sequences are the passage (optional) and each line of the
self-edit, as plain text ending in EOS. Sequences are right-padded so that
real tokens keep the positions they would have alone, and padding is masked
out of the loss (label -100).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import save_portable
from protocol.messages import TrainJob, TrainSettings

IGNORE_INDEX = -100
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


@dataclass
class TrainedAdapter:
    """A freshly trained adapter, saved in a temporary folder until the store takes it."""

    folder: Path
    settings: TrainSettings
    num_sequences: int
    steps: int
    losses: list[float]
    seconds: float


def training_texts(job: TrainJob, settings: TrainSettings) -> list[str]:
    """The sequences a job trains on: the passage, then one per self-edit line (list markers removed)."""
    lines = [_LIST_MARKER.sub("", line).strip() for line in job.self_edit.text.splitlines()]
    texts = [line for line in lines if line]
    if settings.include_context:
        texts.insert(0, job.context.text)
    return texts


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, each ending in EOS, truncated to ``max_length``."""
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length - 1)["input_ids"]
    return [[*seq, tokenizer.eos_token_id] for seq in ids]


def collate(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence; padding gets attention 0 and label IGNORE_INDEX."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


@dataclass(frozen=True)
class Step:
    """One optimizer step of a candidate: its epoch and the indices of the sequences in its batch."""

    epoch: int
    indices: list[int]


def training_schedule(num_sequences: int, settings: TrainSettings) -> list[Step]:
    """Every optimizer step of a training run, in order: each epoch reshuffled by ``Random(settings.seed)``.

    The sequential and the batched trainers both follow this, so a candidate sees the same batches either way.
    """
    order = random.Random(settings.seed)
    steps = []
    for epoch in range(settings.epochs):
        indices = list(range(num_sequences))
        order.shuffle(indices)
        size = settings.batch_size
        steps += [Step(epoch, indices[start : start + size]) for start in range(0, num_sequences, size)]
    return steps


def epoch_means(schedule: list[Step], step_losses: list[float]) -> list[float]:
    """The mean step loss of each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for step, loss in zip(schedule, step_losses, strict=True):
        by_epoch.setdefault(step.epoch, []).append(loss)
    return [sum(losses) / len(losses) for losses in by_epoch.values()]


def lora_config(settings: TrainSettings, base_model: str) -> LoraConfig:
    """The peft config of a candidate with these settings."""
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )


def train_adapter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    job: TrainJob,
    settings: TrainSettings,
    base_model: str,
) -> TrainedAdapter:
    """Train one fresh LoRA adapter on ``job`` and save it; ``model`` is left as it was."""
    started = time.perf_counter()
    sequences = tokenize_texts(tokenizer, training_texts(job, settings), settings.max_length)
    torch.manual_seed(settings.seed)  # LoRA A matrices are initialised at random
    peft_model = get_peft_model(model, lora_config(settings, base_model))
    try:
        losses, steps = _fit(peft_model, sequences, settings, tokenizer.pad_token_id)
        folder = save_portable(peft_model, base_model, "seal-adapter-")
    finally:
        peft_model.unload()  # drop the LoRA layers: the base model is shared by every job
    return TrainedAdapter(folder, settings, len(sequences), steps, losses, time.perf_counter() - started)


def _fit(model: PeftModel, sequences: list[list[int]], settings: TrainSettings, pad_id: int) -> tuple[list[float], int]:
    """AdamW over the schedule's batches; returns the mean loss of each epoch and the step count."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    schedule = training_schedule(len(sequences), settings)
    device = next(model.parameters()).device
    model.train()
    step_losses = []
    for step in schedule:
        batch = collate([sequences[i] for i in step.indices], pad_id)
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step_losses.append(loss.item())
    model.eval()
    return epoch_means(schedule, step_losses), len(schedule)
