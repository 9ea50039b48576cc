"""``seal bench continual``'s settings: the passages, the arms' shared training, and the gate, recorded with results."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from library.datasets import DEMO_DOCUMENTS
from library.model_specs import DEFAULT_MODEL, DTypeName
from protocol.messages import Metric, SamplingConfig, TrainConfig

NAIVE, GATE, REHEARSAL = "naive sequential", "seal gate", "seal gate + rehearsal"
ARMS = (NAIVE, GATE, REHEARSAL)


class ContinualBenchConfig(BaseModel):
    """What ``seal bench continual`` adapts in sequence, and how; the three arms share all of it but the gate."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(DEMO_DOCUMENTS, description="SQuAD-format passages with their own questions (τ), in order.")
    limit: int | None = Field(None, ge=2, description="Adapt only the first N passages (default: all).")
    model: str = Field(DEFAULT_MODEL, description="The student's (and auditor's) base model.")
    teacher: str | None = Field(None, description="Teacher spec (default: the student's model).")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda' for every role.")
    dtype: DTypeName = Field("auto", description="Weights' dtype for every role.")
    k: int = Field(1, ge=1, le=16, description="Self-edits per passage, the same ones in every arm.")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=160, seed=0),
        description="Teacher sampling (once per passage; every arm trains the same self-edits).",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Student LoRA settings (and seed), all arms.")
    metric: Metric = Field("loglik", description="The gate's acceptance metric.")
    min_gain: float = Field(0.05, description="The gate's smallest gain.")
    max_retention_drop: float = Field(1.0, ge=0, description="The gate's retention limit (nats/token).")
    max_earlier_drop: float = Field(0.2, ge=0, le=1, description="The gate's limit on an earlier passage's drop.")
    probe_answers_may_lose: int = Field(1, ge=0, description="Answer probes the gate lets a candidate stop answering.")
    rehearsal: int = Field(2, ge=1, le=64, description="Earlier accepted self-edits rehearsed per candidate (arm 3).")
    rehearsal_seed: int = Field(0, description="Seed of the rehearsal sample.")
    answer_tokens: int = Field(24, ge=1, le=1024, description="Most tokens per answer, in judging and measuring.")
    out: Path = Field(Path("bench/results/continual"), description="Results folder; a rerun resumes from it.")


def command_line(config: ContinualBenchConfig, threads: int | None = None) -> str:
    """The ``seal bench continual`` command that runs ``config``: a flag for every setting not at its default."""
    flags = _flags(config.model_dump(mode="json"), ContinualBenchConfig().model_dump(mode="json"), "")
    return shlex.join(["seal", "bench", "continual", *flags, *(["--threads", str(threads)] if threads else [])])


def _flags(values: dict[str, Any], defaults: dict[str, Any] | None, prefix: str) -> list[str]:
    """Flags for the values that differ from ``defaults``; a nested setting that differs is given whole, since
    its flags start from the nested model's own defaults, not the field's (None: every value)."""
    flags = []
    for key, value in values.items():
        name = prefix + key.replace("_", "-")
        if isinstance(value, dict):
            flags += _flags(value, None, name + ".") if defaults is None or value != defaults.get(key) else []
        elif defaults is None or value != defaults.get(key):
            flags += [f"--{name}", json.dumps(value) if isinstance(value, list) or value is None else str(value)]
    return flags
