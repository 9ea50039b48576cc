"""The one training loop every LoRA update runs: AdamW over epochs of batches.

The student's candidates (K together; one at a time in the tests' peft reference), its few-shot
test-time adapters and the teacher's ReST^EM M-step all train through :func:`fit`; what differs between them is only the
batches and the step callback that turns a batch into gradients. Batches are right-padded by
:func:`collate`, and label :data:`IGNORE_INDEX` keeps a token out of the loss (padding, or a
prompt the loss should not cover).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

IGNORE_INDEX = -100
"""The label of a token that carries no loss (transformers' and torch's cross-entropy default)."""

Batch = TypeVar("Batch")
ParamGroup = dict[str, Any]
"""A torch optimizer parameter group: ``{"params": [...], "lr": ...}``."""
ModelBatch = dict[str, torch.Tensor]
"""A causal LM's keyword arguments for one batch: ``input_ids`` and ``labels``, (B, T) each, and so on."""


@dataclass(frozen=True)
class TrainingRun:
    """How a training run went: the mean step loss of each epoch, and the number of optimizer steps."""

    losses: list[float]
    steps: int


def fit(groups: list[ParamGroup], epochs: Iterable[Iterable[Batch]], step: Callable[[Batch], float]) -> TrainingRun:
    """AdamW (no weight decay) over ``epochs``; one optimizer step per batch.

    ``step(batch)`` runs the forward and backward passes of one batch (several backward calls
    accumulate, as for micro-batches) and returns its loss. Each parameter group sets its own
    learning rate; a group whose parameters got no gradient in a step is left as it was. An
    epoch without batches has no mean loss.
    """
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    losses, steps = [], 0
    for batches in epochs:
        epoch = []
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            epoch.append(step(batch))
            optimizer.step()
        if epoch:
            losses.append(sum(epoch) / len(epoch))
        steps += len(epoch)
    return TrainingRun(losses, steps)


def fit_causal_lm(model: nn.Module, learning_rate: float, epochs: Iterable[Iterable[ModelBatch]]) -> TrainingRun:
    """:func:`fit` on the trainable parameters of ``model`` (a fresh peft adapter's), by its own loss.

    Each batch holds the model's keyword arguments (``input_ids``, ``labels``, optionally
    ``attention_mask``); the loss is transformers' token mean over the batch's labels. The model
    is in train mode during training and in eval mode after.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device

    def step(batch: ModelBatch) -> float:
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        return loss.item()

    model.train()
    run = fit([{"params": params, "lr": learning_rate}], epochs, step)
    model.eval()
    return run


def shuffled_batches(num_items: int, epochs: int, batch_size: int, seed: int) -> list[list[list[int]]]:
    """Item indices of each batch of each epoch: every epoch reshuffled by one ``Random(seed)``."""
    order = random.Random(seed)
    schedule = []
    for _ in range(epochs):
        indices = list(range(num_items))
        order.shuffle(indices)
        schedule.append([indices[start : start + batch_size] for start in range(0, num_items, batch_size)])
    return schedule


def collated(
    epochs: list[list[list[int]]], sequences: list[list[int]], pad_id: int, labels: list[list[int]] | None = None
) -> Iterator[Iterator[ModelBatch]]:
    """The batches of ``epochs`` (indices into ``sequences``), each collated when the loop reaches it."""
    for batches in epochs:
        yield (
            collate([sequences[i] for i in batch], pad_id, None if labels is None else [labels[i] for i in batch])
            for batch in batches
        )


def collate(sequences: list[list[int]], pad_id: int, labels: list[list[int]] | None = None) -> ModelBatch:
    """Right-pad to the longest sequence; padding gets attention 0 and label IGNORE_INDEX.

    ``labels`` (one list per sequence, as long as it) default to the sequences themselves.
    """
    labels = sequences if labels is None else labels
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    label_ids = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (seq, seq_labels) in enumerate(zip(sequences, labels, strict=True)):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        label_ids[row, : len(seq)] = torch.tensor(seq_labels)
        attention[row, : len(seq)] = 1
    return {"input_ids": input_ids, "labels": label_ids, "attention_mask": attention}
