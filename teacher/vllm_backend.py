"""The vLLM teacher: an in-process ``vllm.LLM`` engine sampling k self-edits for many contexts at once.

vLLM's OpenAI-compatible server, run as its own service (compose.yaml's ``vllm``), is served by
:class:`library.openai_backend.OpenAITeacher` pointed at its base URL instead.

A new teacher version (a LoRA adapter trained on the best self-edits) is served with
:meth:`VLLMTeacher.serve_version` under a name derived from its content hash, so a retrained
adapter in a reused folder never hits vLLM's cache of the old one.

Prompts are built exactly as :class:`teacher.backends.TransformersTeacher` builds them (the
model's chat template, tokenised without added special tokens), and completions are decoded with
the same tokenizer, so the two backends differ only in the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from library.backend_errors import BackendRequestError, BackendUnavailable
from library.completions import Completion, VersionKind, texts_of
from library.models import DTypeName, ModelLoadError, load_model, load_tokenizer
from library.qa_format import as_chat
from library.usage import shares, usage
from library.vllm_engine import LoRANames, VLLMConfig, build_engine, require_vllm
from protocol.messages import SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class VLLMTeacher:
    """Self-edits from a vLLM engine in this process (pass ``engine`` to share one already built)."""

    version_kind: VersionKind = "lora"

    def __init__(self, model: str, settings: VLLMConfig | None = None, engine: Any = None) -> None:
        self.model_id = f"vllm:{model}"
        self.settings = settings or VLLMConfig()
        try:
            require_vllm(f"the teacher {self.model_id}")
            self.tokenizer = load_tokenizer(model)
            self.engine = engine if engine is not None else build_engine(model, self.settings)
        except ModelLoadError as exc:
            raise BackendUnavailable(str(exc)) from None
        self.versions = LoRANames("teacher")
        self.lora: Any = None  # the LoRARequest of the version being served; None: the base model
        self.lora_name: str | None = None

    def serve_version(self, adapter_folder: Path | str) -> str:
        """Sample from now on with the teacher version (a peft LoRA folder) in ``adapter_folder``.

        Returns the served name, ``teacher-<first 16 hex digits of the content hash>``.
        """
        if not self.settings.enable_lora:
            raise BackendUnavailable(f"{self.model_id}: serving a teacher version needs enable_lora")
        self.lora = self.versions.request(adapter_folder)
        self.lora_name = self.lora.lora_name
        return self.lora_name

    def serve_base(self) -> None:
        """Sample from the base model again."""
        self.lora, self.lora_name = None, None

    def training_copy(self, device: str, dtype: DTypeName) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
        """A transformers copy of the engine's model: the engine's weights cannot be trained in place."""
        spec = self.model_id.removeprefix("vllm:")
        model, tokenizer = load_model(spec, device, dtype)
        return model, tokenizer, spec

    def sample(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order."""
        return texts_of(self.complete(prompts, n, sampling))

    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """``n`` completions for each prompt, all prompts in one ``generate`` call, with token counts."""
        return self._generate(prompts, n, sampling, None)

    def complete_json(
        self, prompts: list[str], n: int, sampling: SamplingConfig, schema: dict[str, Any]
    ) -> list[list[Completion]]:
        """Like ``complete``, decoding guided by ``schema`` (vLLM's structured outputs: every text is such JSON,
        unless it is cut off by ``max_new_tokens``). Compact JSON: the engine allows no whitespace between
        tokens (:func:`library.vllm_engine.engine_kwargs`), so no sample spends its budget on it."""
        from vllm.sampling_params import StructuredOutputsParams

        return self._generate(prompts, n, sampling, StructuredOutputsParams(json=schema))

    def _generate(self, prompts: list[str], n: int, sampling: SamplingConfig, guided: Any) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError

        greedy = sampling.temperature == 0  # vLLM refuses n > 1 without sampling: the n would be equal anyway
        params = SamplingParams(
            n=1 if greedy else n,
            temperature=sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,  # vLLM gives the i-th of the n samples seed + i
            detokenize=False,  # decoded below with the same tokenizer as the transformers teacher
            structured_outputs=guided,
        )
        token_prompts = [{"prompt_token_ids": self._prompt_ids(p)} for p in prompts]
        try:
            outputs = self.engine.generate(token_prompts, params, lora_request=self.lora, use_tqdm=False)
        except (ValueError, VLLMClientError) as exc:  # a request vLLM refuses, e.g. a prompt over max_model_len
            line = next((part for part in str(exc).splitlines() if part.strip()), type(exc).__name__)
            raise BackendRequestError(f"{self.model_id}: {line[:300]} (see --vllm.max-model-len)") from None
        rows = [self._completions(output) for output in outputs]
        return [row * n for row in rows] if greedy else rows

    def _prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(as_chat(self.tokenizer, prompt), add_special_tokens=False)["input_ids"]

    def _completions(self, output: Any) -> list[Completion]:
        # The prompt is processed once for its n samples: each sample gets a share of its tokens.
        prompt_shares = shares(len(output.prompt_token_ids), len(output.outputs))
        return [
            Completion(
                self.tokenizer.decode(list(c.token_ids), skip_special_tokens=True).strip(),
                usage(share, len(c.token_ids), None),
            )
            for c, share in zip(output.outputs, prompt_shares, strict=True)
        ]
