"""The student's configuration: data, separate from the code that uses it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from protocol.messages import TrainSettings
from seal.models import DEFAULT_MODEL


class StudentConfig(BaseModel):
    """Everything the student process needs to start."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Base model: the embedded default, a local folder or a hub id.")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda'.")
    store: Path = Field(Path("runs/store"), description="Artifact store folder for candidate adapters.")
    train: TrainSettings = Field(default_factory=TrainSettings, description="Default LoRA settings.")
    answer_batch_size: int = Field(16, ge=1, description="Questions per generation batch.")
