"""The student's few-shot (ARC) path: test-time training from a self-edit, then augmented, voted answers.

For a task and a :class:`~protocol.fewshot.FewShotSelfEdit` the student clamps the self-edit
into its limits, builds the training set from the task's demonstrations
(:func:`student.ttt_data.build_training_set`) and trains a fresh LoRA on it, kept in the store
(:meth:`FewShotStudent.train`). Asked for answers with that adapter (:meth:`FewShotStudent.answer`),
it answers each test input under several invertible views (:data:`student.augment.INFERENCE_VIEWS`),
maps each answer back and votes two attempts; without one it answers in context only, with the base
model and the identity view. A task whose prompt does not fit ``max_length`` is skipped.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.arc import task_prompt, text_to_grid
from library.lora import lora_config, save_portable
from library.training import IGNORE_INDEX, ModelBatch, fit_causal_lm
from protocol.artifacts import ArtifactStore
from protocol.fewshot import ArcPrediction, ArcTask, FewShotSelfEdit, Grid
from protocol.messages import AdapterRef
from student.augment import IDENTITY, INFERENCE_VIEWS, Transform
from student.fewshot_config import FewShotStudentConfig
from student.ttt_data import TrainingExample, build_training_set, transform_pair, vote

log = logging.getLogger(__name__)
STOP_STRINGS = ["\n\n", "Input", "Output"]  # an answer grid ends at a blank or a non-grid line
_Encoded = tuple[list[int], list[int]]  # (input_ids, labels) of one training example


@dataclass(frozen=True)
class TrainedTask:
    """What test-time training on one task gave: the adapter's id in the store, or why it was skipped."""

    adapter: AdapterRef | None
    num_examples: int
    losses: list[float]
    seconds: float
    skipped: str | None = None


class FewShotStudent:
    """Answers ARC tasks with one base model, training a fresh test-time adapter per self-edit."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        base_model: str,
        store: ArtifactStore,
        config: FewShotStudentConfig | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.config = config or FewShotStudentConfig()
        self.store = store

    def train(self, task: ArcTask, edit: FewShotSelfEdit, provenance: dict[str, Any]) -> TrainedTask:
        """A fresh LoRA trained on ``task``'s demonstrations as ``edit`` says (clamped), kept in the store.

        ``provenance`` is recorded with the adapter (what it was trained from). A task too long for
        ``max_length`` is not trained (``adapter_id`` None, ``skipped`` says why).
        """
        started = time.perf_counter()
        too_long = self.too_long(task)
        if too_long:
            return TrainedTask(None, 0, [], 0.0, too_long)
        edit = self.config.clamp(edit)
        examples = build_training_set(task, edit, self.config.max_examples, self.config.seed)
        sequences = [s for s in (self._encode(e, edit) for e in examples) if len(s[0]) <= self.config.max_length]
        torch.manual_seed(self.config.seed)  # LoRA A matrices are initialised at random
        config = lora_config(self.config.rank, self.config.alpha, self.config.target_modules, self.base_model)
        peft_model = get_peft_model(self.model, config)
        try:
            losses = fit_causal_lm(peft_model, edit.learning_rate, self._epochs(sequences, edit)).losses
            adapter = self._store(peft_model, task, edit, losses, provenance)
        finally:
            peft_model.unload()  # the base model is shared by every task
        log.info("%s: %d examples, loss %s", task.task_id, len(sequences), _ends(losses))
        return TrainedTask(adapter, len(sequences), losses, time.perf_counter() - started)

    def answer(self, task: ArcTask, adapter_id: str | None) -> ArcPrediction:
        """Two attempts per test input: with the stored adapter ``adapter_id`` under the configured views
        (mapped back and voted), or in context only with the base model and the identity view (None).

        An adapter missing from the store, or altered, raises :class:`protocol.artifacts.ArtifactError`.
        """
        started = time.perf_counter()
        too_long = self.too_long(task)
        if too_long:
            return ArcPrediction(task_id=task.task_id, attempts=[], votes=[], skipped=too_long)
        if adapter_id is None:
            attempts, votes = self._answer(self.model, task, [IDENTITY])
        else:
            peft_model = PeftModel.from_pretrained(self.model, self.store.path(adapter_id))
            try:
                attempts, votes = self._answer(peft_model, task, list(INFERENCE_VIEWS[: self.config.views]))
            finally:
                peft_model.unload()
        log.info("%s answered (%s): votes %s", task.task_id, "adapted" if adapter_id else "in context", votes)
        return ArcPrediction(
            task_id=task.task_id,
            attempts=attempts,
            votes=votes,
            adapter_id=adapter_id,
            seconds=time.perf_counter() - started,
        )

    # ----------------------------------------------------------------- training

    def _encode(self, example: TrainingExample, edit: FewShotSelfEdit) -> _Encoded:
        """``(input_ids, labels)``: prompt, answer grid and EOS; the prompt unlabelled for 'output_tokens'."""
        prompt = self._ids(example.prompt)
        answer = [*self._ids(example.answer), self.tokenizer.eos_token_id]
        masked = [IGNORE_INDEX] * len(prompt) if edit.strategy == "output_tokens" else prompt
        return prompt + answer, masked + answer

    def _epochs(self, sequences: list[_Encoded], edit: FewShotSelfEdit) -> Iterator[Iterator[ModelBatch]]:
        """One example a step (unpadded: no attention mask), reshuffled each epoch by the config's seed."""
        order = torch.Generator().manual_seed(self.config.seed)
        for _ in range(edit.num_train_epochs):
            permutation = torch.randperm(len(sequences), generator=order).tolist()
            yield (_as_batch(*sequences[index]) for index in permutation)

    def _store(
        self, model: PeftModel, task: ArcTask, edit: FewShotSelfEdit, losses: list[float], provenance: dict[str, Any]
    ) -> AdapterRef:
        """Keep the test-time adapter as a content-addressed artifact, with what it was trained from."""
        folder = save_portable(model, self.base_model, "arc-adapter-")
        try:
            recorded = {"task_id": task.task_id, "self_edit": edit.model_dump(), "losses": losses, **provenance}
            return self.store.put_adapter(folder, self.base_model, recorded)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # ----------------------------------------------------------------- answering

    def too_long(self, task: ArcTask) -> str | None:
        """Why the task cannot be attempted within ``max_length``, or None."""
        for test_input in task.test_inputs:
            length = len(self._ids(task_prompt(list(task.train), test_input))) + self._answer_budget(task, test_input)
            if length > self.config.max_length:
                return f"prompt and answer need ~{length} tokens, more than max_length {self.config.max_length}"
        return None

    def _answer(
        self, model: PreTrainedModel, task: ArcTask, views: list[Transform]
    ) -> tuple[list[list[Grid]], list[list[int]]]:
        """Each test input answered under every view that fits, mapped back and voted into two attempts."""
        attempts, votes = [], []
        for test_input in task.test_inputs:
            usable = [v for v in views if all(v.fits(p.input) and v.fits(p.output) for p in task.train)]
            prompts = [task_prompt([transform_pair(p, v) for p in task.train], v.forward(test_input)) for v in usable]
            texts = self._generate(model, prompts, self._answer_budget(task, test_input))
            ranked = vote([_mapped_back(view, text) for view, text in zip(usable, texts, strict=True)])
            attempts.append([grid for grid, _ in ranked])
            votes.append([count for _, count in ranked])
        return attempts, votes

    def _answer_budget(self, task: ArcTask, test_input: Grid) -> int:
        """Tokens allowed for an answer: a bit more than the largest grid among outputs and this input."""
        grids = [p.output for p in task.train] + [test_input]
        cells = max(len(g) * (len(g[0]) + 1) for g in grids)  # a digit per cell and a newline per row
        return min(self.config.max_new_tokens, int(cells * 1.25) + 8)

    @torch.no_grad()
    def _generate(self, model: PreTrainedModel, prompts: list[str], max_new_tokens: int) -> list[str]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **batch.to(self.model.device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            stop_strings=STOP_STRINGS,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )  # (views, T_prompt + T_new)
        return self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _as_batch(ids: list[int], labels: list[int]) -> ModelBatch:
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels])}  # (1, T) each


def _mapped_back(view: Transform, text: str) -> Grid | None:
    grid = text_to_grid(text)
    return None if grid is None else view.inverse(grid)


def _ends(losses: list[float]) -> str:
    return f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "n/a"
