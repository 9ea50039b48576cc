"""Settings for τ written from documents: which documents the auditor reads, how it splits and asks them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from library.api_models import APIModelConfig


class DocumentTauConfig(BaseModel):
    """How the auditor turns documents into passages and τ (``seal adapt``); no paths: τ comes from --data."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Path] = Field(
        default_factory=list,
        description="Documents (Markdown, text, HTML, PDF files or folders) the auditor reads itself and writes τ "
        "from; when given, --data is not read.",
    )
    max_tokens: int = Field(
        256,
        ge=16,
        le=8192,
        description="Most tokens of a passage (the student's tokenizer); whole paragraphs where they fit.",
    )
    questions: list[Path] = Field(
        default_factory=list,
        description="Question files (JSONL, CSV or YAML: question, answer or answers, and passage or document).",
    )
    user_questions: Literal["instead", "in_addition"] = Field(
        "instead",
        description="A passage with questions from --documents.questions: only those (instead), or those and the "
        "written ones (in_addition). Passages without any get written ones either way.",
    )
    writer: Literal["cloze", "model", "api"] = Field(
        "cloze",
        description="Who writes τ where the user gave none: cloze (the passage's names, numbers and dates blanked, "
        "no model), model (the auditor's own model, greedy) or api (--documents.writer-api, at temperature 0 where "
        "the API takes one); "
        "all checked the same way.",
    )
    writer_api: APIModelConfig | None = Field(
        None,
        description="The API model of --documents.writer api, configured on the auditor only: with a key file, "
        "its key is read where τ is written, never by the teacher or the student (a key in an environment "
        "variable is in the environment of every process started from it).",
    )
    writer_cache: Path | None = Field(
        None,
        description="JSONL file keeping what the API writer wrote, by passage: each passage is asked once, and "
        "every reader of the same documents holds the same pairs (seal adapt: in the run folder's auditor/).",
    )
    max_questions: int = Field(10, ge=2, le=200, description="Most question-answer pairs kept per passage.")
    acceptance_share: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of each passage's pairs sealed for the acceptance decision; the rest are the reward set.",
    )

    @model_validator(mode="after")
    def _api_writer_named(self) -> DocumentTauConfig:
        if self.writer == "api" and self.writer_api is None:
            raise ValueError(
                "--documents.writer api needs --documents.writer-api.model openai:MODEL (or anthropic:MODEL)"
            )
        return self
