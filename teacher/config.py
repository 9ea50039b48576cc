"""The teacher's configuration: which model proposes, how, and for which contexts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from library.model_specs import DEFAULT_MODEL, DTypeName
from library.vllm_engine import VLLMConfig
from protocol.messages import SamplingConfig, SelfEditFormat
from teacher.backend_spec import API_KINDS, parse_spec
from teacher.restem_config import RestemConfig


class TeacherConfig(BaseModel):
    """Everything the teacher process needs to run one adaptation pass."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="Teacher: [transformers:|vllm:|openai:|anthropic:]MODEL; a bare MODEL (the embedded default, "
        "a local folder or a hub id) runs on transformers.",
    )
    base_url: str | None = Field(None, description="API base URL for openai: and anthropic: (default: the provider's).")
    api_timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one API answer before retrying.")
    api_retries: int = Field(4, ge=0, le=20, description="Retries of a failed API request (429, 5xx, timeouts).")
    api_concurrency: int = Field(4, ge=1, le=64, description="API requests in flight at once.")
    api_price_in: float | None = Field(None, ge=0, description="USD per million input tokens (default: list price).")
    api_price_out: float | None = Field(None, ge=0, description="USD per million output tokens (default: list price).")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="vLLM engine settings (vllm: teachers).")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'.")
    dtype: DTypeName = Field("auto", description="Weights' dtype (transformers teachers): auto, float32 or bfloat16.")
    version: str = Field("v0", description="Teacher version recorded with every self-edit.")
    data: Path | None = Field(None, description="SQuAD-format file of contexts; default: the demo documents.")
    limit: int | None = Field(None, ge=1, description="Use only the first N passages of --data.")
    per_title: int | None = Field(
        None, ge=1, description="Take at most N passages of each title of --data, before --limit (None: all)."
    )
    format: SelfEditFormat = Field("implications", description="Self-edit format: implications, rewrite or self_qa.")
    worked_example: bool = Field(
        True, description="Show the format once, on a made-up passage, before the real one (teacher/prompts.py)."
    )
    k: int = Field(1, ge=1, le=64, description="Self-edits sampled per context.")
    propose_ahead: bool = Field(
        False,
        description="Sample the next context's self-edits while the student trains and the auditor judges this "
        "one's (teacher.loop.Proposals); the same samples, sooner, where the teacher has cores to spare.",
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=160),
        description="Sampling settings.",
    )
    restem: RestemConfig = Field(
        default_factory=RestemConfig, description="ReST^EM rounds (seal train-teacher); 0 rounds: one pass."
    )
    run_dir: Path = Field(Path("runs/demo"), description="Where results are written; a rerun resumes from here.")
    rehearsal: int = Field(
        0,
        ge=0,
        le=64,
        description="Earlier accepted self-edits whose lines are mixed into each new candidate's training "
        "(rehearsal against forgetting); 0: none.",
    )
    rehearsal_seed: int = Field(0, description="Seed of the rehearsal sample (drawn per context).")
    promotion_log: Path | None = Field(
        None,
        description="Before each new context, wait until this JSON-lines file names every finished one (the "
        "launcher's promotion step, seal adapt --promote accepted); None: do not wait.",
    )
    promotion_timeout_s: float = Field(600, gt=0, description="Seconds to wait for one promotion step.")
    ready_timeout_s: float = Field(600, gt=0, description="Seconds to wait for the student and auditor to come up.")
    train_timeout_s: float = Field(1800, gt=0, description="Seconds to wait for the student to train a batch.")
    judge_timeout_s: float = Field(1800, gt=0, description="Seconds to wait for the auditor's verdicts.")

    @field_validator("model")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        parse_spec(value)  # a ValueError names the backends
        return value

    @model_validator(mode="after")
    def _api_options_need_an_api_backend(self) -> TeacherConfig:
        if self.base_url and parse_spec(self.model).kind not in API_KINDS:
            raise ValueError(f"--base-url is for openai: and anthropic: teachers, not {self.model!r}")
        if (self.api_price_in is None) != (self.api_price_out is None):
            raise ValueError("give both --api-price-in and --api-price-out, or neither")
        return self

    @model_validator(mode="after")
    def _vllm_can_serve_the_trained_teacher(self) -> TeacherConfig:
        rank = self.restem.sft.rank
        if not self.restem.rounds or parse_spec(self.model).kind != "vllm":
            return self
        if not self.vllm.enable_lora:
            raise ValueError("ReST^EM serves each trained teacher version as a LoRA: keep --vllm.enable-lora on")
        if rank > self.vllm.max_lora_rank:
            raise ValueError(
                f"--restem.sft.rank {rank} is above --vllm.max-lora-rank {self.vllm.max_lora_rank}: "
                "the engine could not serve the teacher versions ReST^EM trains; raise the one or lower the other"
            )
        return self
