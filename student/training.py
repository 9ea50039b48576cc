"""What the student's inner-loop update trains on: a self-edit's sequences, its schedule, its LoRA config.

A job's training sequences are the passage (optional) and each item of the
self-edit (:mod:`library.self_edit_items`), as plain text ending in EOS. They are trained by :mod:`student.batched`,
right-padded (:func:`library.training.collate`) so that real tokens keep the
positions they would have alone, with padding masked out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig
from transformers import PreTrainedTokenizerBase

from library import lora
from library.self_edit_items import self_edit_items
from library.training import shuffled_batches
from protocol.messages import TrainConfig, TrainJob


@dataclass
class TrainedAdapter:
    """A freshly trained adapter, saved in a temporary folder until the store takes it."""

    folder: Path
    settings: TrainConfig
    num_sequences: int
    steps: int
    losses: list[float]
    seconds: float


def training_texts(job: TrainJob, settings: TrainConfig) -> list[str]:
    """The sequences a job trains on: the passage, then one per self-edit item (a sentence, a QA pair, a line).

    The items of the job's rehearsal self-edits (earlier accepted ones) follow the self-edit's own, then its
    anchors (the base model's own answers, :mod:`student.anchors`), whole.
    """
    edits = (job.self_edit, *job.rehearsal)
    texts = [item for edit in edits for item in self_edit_items(edit.text, edit.format)] + job.anchor_texts
    if settings.include_context:
        texts.insert(0, job.context.text)
    return texts


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text, each ending in EOS, truncated to ``max_length``."""
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length - 1)["input_ids"]
    return [[*seq, tokenizer.eos_token_id] for seq in ids]


@dataclass(frozen=True)
class Step:
    """One optimizer step of a candidate: its epoch and the indices of the sequences in its batch."""

    epoch: int
    indices: list[int]


def training_schedule(num_sequences: int, settings: TrainConfig) -> list[Step]:
    """Every optimizer step of a training run, in order: each epoch reshuffled by ``Random(settings.seed)``.

    The batched trainer and the tests' sequential peft reference both follow this, so a candidate sees the same
    batches either way.
    """
    epochs = shuffled_batches(num_sequences, settings.epochs, settings.batch_size, settings.seed)
    return [Step(epoch, batch) for epoch, batches in enumerate(epochs) for batch in batches]


def epoch_means(schedule: list[Step], step_losses: list[float]) -> list[float]:
    """The mean step loss of each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for step, loss in zip(schedule, step_losses, strict=True):
        by_epoch.setdefault(step.epoch, []).append(loss)
    return [sum(losses) / len(losses) for losses in by_epoch.values()]


def lora_config(settings: TrainConfig, base_model: str) -> LoraConfig:
    """The peft config of a candidate with these settings."""
    return lora.lora_config(settings.rank, settings.alpha, settings.target_modules, base_model, settings.dropout)
