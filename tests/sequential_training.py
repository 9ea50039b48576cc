"""The reference the batched trainer is checked against: one candidate at a time, through peft.

:func:`train_adapter` trains a single candidate as peft would (``get_peft_model`` under the
candidate's seed, the model's own loss) on the batches :mod:`student.batched` gives it, through
the product's one training loop (:func:`library.training.fit_causal_lm`).
"""

from __future__ import annotations

import time

import torch
from peft import get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import save_portable
from library.training import collated, fit_causal_lm, shuffled_batches
from protocol.messages import TrainConfig, TrainJob
from student.training import TrainedAdapter, lora_config, tokenize_texts, training_texts


def train_adapter(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    job: TrainJob,
    settings: TrainConfig,
    base_model: str,
) -> TrainedAdapter:
    """Train one fresh LoRA adapter on ``job`` and save it; ``model`` is left as it was."""
    started = time.perf_counter()
    sequences = tokenize_texts(tokenizer, training_texts(job, settings), settings.max_length)
    torch.manual_seed(settings.seed)  # LoRA A matrices are initialised at random
    peft_model = get_peft_model(model, lora_config(settings, base_model))
    try:
        # The batches of student.training.training_schedule, which the batched trainer follows.
        epochs = shuffled_batches(len(sequences), settings.epochs, settings.batch_size, settings.seed)
        run = fit_causal_lm(peft_model, settings.learning_rate, collated(epochs, sequences, tokenizer.pad_token_id))
        folder = save_portable(peft_model, base_model, "adapter-")
    finally:
        peft_model.unload()  # drop the LoRA layers: the base model is shared by every job
    return TrainedAdapter(folder, settings, len(sequences), run.steps, run.losses, time.perf_counter() - started)
