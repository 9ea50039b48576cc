"""The student's limits and LoRA settings for test-time training on ARC tasks.

The teacher's self-edit chooses the recipe; these limits are the student's and bound what any
self-edit can make it do (the training set's size, sequence length, learning rate, epochs).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from library.model_specs import DEFAULT_MODEL, DTypeName
from protocol.fewshot import FewShotSelfEdit


class FewShotStudentConfig(BaseModel):
    """Test-time training limits and LoRA settings (CPU-sized defaults)."""

    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(2048, ge=64, le=32768, description="Longest sequence in tokens; longer tasks are skipped.")
    max_examples: int = Field(24, ge=1, le=4096, description="Most augmented examples in one training set.")
    min_learning_rate: float = Field(1e-5, gt=0, description="A self-edit's learning rate is raised to at least this.")
    max_learning_rate: float = Field(1e-3, gt=0, description="A self-edit's learning rate is lowered to at most this.")
    max_epochs: int = Field(3, ge=1, le=100, description="A self-edit's epochs are capped at this.")
    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator α (scale = α / r).")
    target_modules: list[str] | str = Field("all-linear", description="Module names to adapt, or 'all-linear'.")
    views: int = Field(4, ge=1, le=8, description="Augmented views each test input is answered under (identity first).")
    max_new_tokens: int = Field(1000, ge=1, le=4096, description="Cap on the tokens generated for one answer grid.")
    seed: int = Field(0, description="Seed of augmentation sampling, LoRA initialisation and data order.")

    @model_validator(mode="after")
    def _ordered_bounds(self) -> FewShotStudentConfig:
        if self.min_learning_rate > self.max_learning_rate:
            raise ValueError("min_learning_rate must not exceed max_learning_rate")
        return self

    def clamp(self, edit: FewShotSelfEdit) -> FewShotSelfEdit:
        """The self-edit with its learning rate and epochs brought within this student's limits."""
        learning_rate = min(max(edit.learning_rate, self.min_learning_rate), self.max_learning_rate)
        return edit.model_copy(
            update={"learning_rate": learning_rate, "num_train_epochs": min(edit.num_train_epochs, self.max_epochs)}
        )


class FewShotStudentServiceConfig(BaseModel):
    """Everything the few-shot student process needs to start (``seal fewshot student``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Base model: the embedded default, a local folder or a hub id.")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda'.")
    dtype: DTypeName = Field("auto", description="Weights' dtype: 'auto', 'float32' or 'bfloat16'.")
    store: Path = Field(Path("runs/store"), description="Artifact store folder for the test-time adapters.")
    ttt: FewShotStudentConfig = Field(
        default_factory=FewShotStudentConfig, description="Test-time training limits and LoRA settings."
    )
