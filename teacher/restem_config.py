"""ReST^EM's settings: how many rounds, how rewards are sampled, what is kept, how the teacher is tuned."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from teacher.sft import SFTSettings


class RestemConfig(BaseModel):
    """The outer loop around the teacher's adaptation pass (``seal train-teacher``)."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(
        0, ge=0, le=100, description="ReST^EM rounds (E-step + M-step each); 0: one pass, the teacher is not trained."
    )
    repeats: int = Field(
        1, ge=1, le=16, description="Trainings per self-edit with different seeds; the reward is their mean."
    )
    min_reward: float = Field(
        0.0, ge=0.0, description="Keep a context's best self-edit only if its reward is above this (and above 0)."
    )
    sft: SFTSettings = Field(default_factory=SFTSettings, description="The M-step's LoRA fine-tuning of the teacher.")
