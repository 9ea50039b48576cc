"""ReST^EM's settings: how many rounds, how rewards are sampled, what is kept, how the teacher is tuned.

Data only, without torch: the CLI builds its flags from these models (:mod:`teacher.sft` runs the M-step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SFTConfig(BaseModel):
    """LoRA supervised fine-tuning of the teacher (the M-step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(16, ge=1, le=1024, description="LoRA rank of the teacher's adapter.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator α.")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Modules to adapt.")
    learning_rate: float = Field(3e-4, gt=0, le=1.0, description="AdamW learning rate.")
    epochs: int = Field(3, ge=1, le=100, description="Passes over the kept (prompt, self-edit) pairs.")
    batch_size: int = Field(4, ge=1, le=1024, description="Pairs per optimizer step.")
    max_length: int = Field(1024, ge=16, le=32768, description="Prompt + completion tokens kept per pair.")
    seed: int = Field(0, description="Seed for LoRA initialisation and data order.")


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
    sft: SFTConfig = Field(default_factory=SFTConfig, description="The M-step's LoRA fine-tuning of the teacher.")
