"""Teacher backends: where self-edit text comes from.

Every backend samples ``n`` completions for each prompt in one call, so that a
batched engine can serve many contexts at once. ``sample`` gives the texts;
``complete`` gives each text with its token usage and, for API models, whether
the model declined (a refusal is a failed proposal, not an error). Backends:
this module's transformers model (the CPU default, on :class:`library.local_model.LocalModel`),
:mod:`teacher.vllm_backend`, :mod:`library.openai_backend` and :mod:`library.anthropic_backend` (in the
library: the auditor's judge and reviewer use them too), chosen by :mod:`teacher.backend_spec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.completions import Completion, VersionKind
from library.local_model import LocalModel
from library.models import DTypeName
from protocol.artifacts import content_id
from protocol.canonical import shorten
from protocol.messages import SamplingConfig


class TeacherBackend(Protocol):
    """A source of self-edit text.

    ``version_kind`` declares how ReST^EM improves it: ``"lora"`` for a local model (its versions are
    LoRA adapters; the backend is then a :class:`LoRATeacher`), ``"exemplars"`` for an API model that
    cannot be fine-tuned here (its versions are exemplar banks shown in the prompt).
    """

    model_id: str
    version_kind: VersionKind

    def sample(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order."""
        ...

    def complete(self, prompts: list[str], n: int, sampling: SamplingConfig) -> list[list[Completion]]:
        """Like ``sample``, with each text's usage and refusal."""
        ...


class LoRATeacher(TeacherBackend, Protocol):
    """A local teacher whose versions are LoRA adapters: it serves one, and hands ReST^EM a model to train."""

    def serve_version(self, adapter_folder: Path | str) -> str:
        """Sample from now on with the LoRA in ``adapter_folder``; returns the name it is served under."""
        ...

    def serve_base(self) -> None:
        """Sample from the base model again."""
        ...

    def training_copy(self, device: str, dtype: DTypeName) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
        """The transformers model and tokenizer the M-step fine-tunes, and the model spec its adapters apply to."""
        ...


class TransformersTeacher(LocalModel):
    """An in-process transformers model (the CPU default); its versions are LoRA adapters on it."""

    version_kind: VersionKind = "lora"

    def __init__(self, model_id: str, device: str = "auto", dtype: DTypeName = "auto", batch_size: int = 4):
        super().__init__(model_id, device, dtype, batch_size)
        self.lora_name: str | None = None

    def serve_version(self, adapter_folder: Path | str) -> str:
        """Sample from now on with the teacher version (a peft LoRA folder) in ``adapter_folder``.

        Returns its name, ``teacher-<first 16 hex digits of the content hash>``, as the vLLM teacher does.
        """
        self.serve_base()
        self.model = PeftModel.from_pretrained(self.base_model, adapter_folder)
        self.model.eval()
        self.lora_name = f"teacher-{shorten(content_id(Path(adapter_folder)))}"
        return self.lora_name

    def serve_base(self) -> None:
        """Sample from the base model again."""
        if isinstance(self.model, PeftModel):
            self.model.unload()
        self.model, self.lora_name = self.base_model, None

    def training_copy(self, device: str, dtype: DTypeName) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
        """Its own base weights (no copy: the M-step's adapter is trained on them, then removed)."""
        self.serve_base()
        return self.base_model, self.tokenizer, self.model_id
