"""The teacher's configuration: which model proposes, how, and for which contexts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from protocol.messages import SamplingSettings, SelfEditFormat
from seal.models import DEFAULT_MODEL


class TeacherConfig(BaseModel):
    """Everything the teacher process needs to run one adaptation pass."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Teacher model: the embedded default, a local folder or a hub id.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'.")
    version: str = Field("v0", description="Teacher version recorded with every self-edit.")
    data: Path | None = Field(None, description="SQuAD-format file of contexts; default: the demo documents.")
    limit: int | None = Field(None, ge=1, description="Use only the first N passages of --data.")
    format: SelfEditFormat = Field("implications", description="Self-edit format: implications, rewrite or self_qa.")
    k: int = Field(1, ge=1, le=64, description="Self-edits sampled per context.")
    sampling: SamplingSettings = Field(
        default_factory=lambda: SamplingSettings(temperature=0.7, top_p=0.95, max_new_tokens=160),
        description="Sampling settings.",
    )
    run_dir: Path = Field(Path("runs/demo"), description="Where results are written; a rerun resumes from here.")
    ready_timeout_s: float = Field(600, gt=0, description="Seconds to wait for the student and auditor to come up.")
    train_timeout_s: float = Field(1800, gt=0, description="Seconds to wait for the student to train a batch.")
    judge_timeout_s: float = Field(1800, gt=0, description="Seconds to wait for the auditor's verdicts.")
