"""ReST^EM's M-step: fine-tune the teacher on the self-edits the auditor rewarded.

Each example is a (prompt, self-edit) pair. The prompt is wrapped exactly as the
teacher wraps it when sampling (:func:`library.qa_format.as_chat`), and the loss is
on the completion only: the prompt's tokens get label -100. The result is a LoRA
adapter on the teacher's base model, saved as an ordinary peft folder; every
teacher version is trained from the base model on its round's data, as in
ReST^EM (no drift from stacking versions).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import lora_config, save_portable
from library.qa_format import as_chat
from library.training import IGNORE_INDEX, ModelBatch, collated, fit_causal_lm, shuffled_batches
from teacher.restem_config import SFTConfig


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
    settings: SFTConfig,
) -> SFTResult:
    """Train a fresh LoRA on ``pairs`` and save it to a temporary folder; ``model`` is left as it was."""
    if not pairs:
        raise ValueError("no (prompt, self-edit) pairs to train the teacher on")
    started = time.perf_counter()
    examples = [tokenize_pair(tokenizer, p, c, settings.max_length) for p, c in pairs]
    torch.manual_seed(settings.seed)
    config = lora_config(settings.rank, settings.alpha, settings.target_modules, base_model)
    peft_model = get_peft_model(model, config)
    try:
        run = fit_causal_lm(peft_model, settings.learning_rate, _batches(examples, settings, tokenizer.pad_token_id))
        folder = save_portable(peft_model, base_model, "teacher-")
    finally:
        peft_model.unload()
    return SFTResult(folder, run.losses, run.steps, time.perf_counter() - started)


def _batches(examples: list[dict], settings: SFTConfig, pad_id: int) -> Iterator[Iterator[ModelBatch]]:
    """Each epoch's batches of pairs, reshuffled by ``settings.seed``: the completion's labels only."""
    epochs = shuffled_batches(len(examples), settings.epochs, settings.batch_size, settings.seed)
    return collated(epochs, [e["input_ids"] for e in examples], pad_id, [e["labels"] for e in examples])
