"""The student's configuration: data, separate from the code that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from library.model_specs import DEFAULT_MODEL, DTypeName
from library.ray_pool import WorkersConfig
from library.vllm_engine import VLLMConfig
from protocol.messages import TrainConfig


class StudentConfig(WorkersConfig):
    """Everything the student process needs to start (``--workers N``: its compute on Ray actors)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Base model: the embedded default, a local folder or a hub id.")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu' or 'cuda'.")
    dtype: DTypeName = Field(
        "auto",
        description="Weights' dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32' or 'bfloat16' "
        "(on a CPU with AVX512-BF16 or AMX about 1.5x faster, with coarser likelihoods).",
    )
    store: Path = Field(Path("runs/store"), description="Artifact store folder for candidate adapters.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Default LoRA settings.")
    train_shards: int | None = Field(
        None,
        ge=1,
        description="Batched passes a request's candidates are cut into (default: one per worker); "
        "an adapter's id depends on this, not on the number of workers.",
    )
    answer_batch_size: int = Field(16, ge=1, description="Questions per generation batch.")
    answer_backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="What answers τ and retention questions: 'transformers' (the training model, peft adapters) "
        "or 'vllm' (one vLLM engine, candidates as LoRAs, --vllm.max-loras of them per batch; needs vllm).",
    )
    vllm: VLLMConfig = Field(
        default_factory=VLLMConfig,
        description="vLLM engine settings (--answer-backend vllm); on a GPU it shares memory with training, "
        "so lower --vllm.gpu-memory-utilization.",
    )

    @model_validator(mode="after")
    def _vllm_can_serve_the_candidates(self) -> StudentConfig:
        if self.answer_backend == "vllm" and not self.vllm.enable_lora:
            raise ValueError("--answer-backend vllm serves candidates as LoRAs: keep --vllm.enable-lora on")
        if self.answer_backend == "vllm" and self.vllm.max_lora_rank < self.train.rank:
            raise ValueError(f"--vllm.max-lora-rank must be at least --train.rank ({self.train.rank})")
        return self
