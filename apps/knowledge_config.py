"""The knowledge bench's settings: data, teachers, mode and the student's training, recorded with the results."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from library.model_specs import DEFAULT_MODEL
from protocol.messages import SamplingConfig, SelfEditFormat, TrainConfig

NO_ADAPTATION, PASSAGE_ONLY, RECORDED = "no adaptation", "passage only", "recorded teacher"


class KnowledgeBenchConfig(BaseModel):
    """What ``seal bench knowledge`` evaluates, and how; recorded with the results."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="SQuAD-format file of held-out passages (with or without 'completions').")
    limit: int | None = Field(50, ge=1, description="Evaluate the first N passages (after --offset).")
    offset: int = Field(0, ge=0, description="Skip this many passages first.")
    model: str = Field(DEFAULT_MODEL, description="The student's base model.")
    teacher: str | None = Field(None, description="Teacher model for the untrained teacher (default: --model).")
    teacher_run: Path | None = Field(None, description="A `seal train-teacher` run folder: its versions are scored.")
    format: SelfEditFormat = Field("implications", description="Self-edit format the teachers write.")
    worked_example: bool = Field(True, description="The teachers' prompts show the format once on a made-up passage.")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=160),
        description="Teacher sampling (one self-edit per passage and teacher).",
    )
    recorded_completions: int = Field(1, ge=1, description="Recorded completions per passage joined into one edit.")
    mode: Literal["single", "cpt"] = Field("single", description="single: an adapter per passage; cpt: one for all.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Student LoRA settings, all conditions.")
    answer_tokens: int = Field(24, ge=1, le=1024, description="Most tokens per generated answer.")
    judge: str | None = Field(
        None, description="LLM judge, e.g. openai:MODEL: the paper's yes/no grading at temperature 0 (optional)."
    )
    judge_base_url: str | None = Field(None, description="API base URL for an openai: or anthropic: judge.")
    out: Path = Field(Path("runs/bench-knowledge"), description="Results folder; a rerun resumes from it.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'.")
