"""``seal adapt``'s settings: the documents, the run folder, and what it passes to the three roles."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from auditor.tau_config import DocumentTauConfig
from library.model_specs import DEFAULT_MODEL, DTypeName


class AdaptConfig(BaseModel):
    """One ``seal adapt`` run: the documents' passages adapted in turn, τ written and kept by the auditor."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path | None = Field(
        None, description="Run folder (default: runs/adapt-<time>); rerun on the same one to resume or to update."
    )
    model: str = Field(DEFAULT_MODEL, description="Student (and auditor) base model: a folder or a hub id.")
    teacher: str | None = Field(
        None, description="Teacher: [transformers:|vllm:|openai:|anthropic:]MODEL (default: the student's model)."
    )
    teacher_base_url: str | None = Field(None, description="API base URL for an openai: or anthropic: teacher.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda' for every role.")
    dtype: DTypeName = Field("auto", description="Weights' dtype for every role: auto, float32 or bfloat16.")
    k: int = Field(1, ge=1, le=64, description="Self-edits (candidates) per passage.")
    format: Literal["implications", "rewrite", "self_qa"] | None = Field(
        None, description="Self-edit format the teacher writes: implications, rewrite or self_qa (default: its own)."
    )
    worked_example: bool | None = Field(
        None, description="The teacher shows the format once on a made-up passage (default: its own, yes)."
    )
    # The defaults below are the dose measured to teach the embedded 135M default greedy answers that the probes
    # still pass (bench/results/adapt_demo/defaults/ and kl16_lr7e-4_recall/: 3 and 2 of the ten demo documents
    # accepted, each raising its sealed acceptance set's right answers, in 13 min on 2 cores); the student's own
    # defaults (3e-4 x 3, no anchors) raise the answers' likelihood but no right answer.
    metric: Literal["loglik", "f1", "exact_match", "answer_recall"] = Field(
        "answer_recall",
        description="Reward and acceptance metric: answer_recall (right answers), loglik, f1 or exact_match.",
    )
    min_gain: float = Field(0.05, description="Smallest gain on the acceptance set the auditor accepts.")
    epochs: int = Field(10, ge=1, description="Student epochs per candidate.")
    learning_rate: float = Field(7e-4, gt=0, description="Student learning rate.")
    anchors: int = Field(
        16,
        ge=0,
        description="Sequences of the base model's own answers to general questions trained beside each "
        "self-edit, against forgetting; 0: none.",
    )
    anchor_loss: Literal["tokens", "kl"] = Field(
        "kl",
        description="How anchors are trained: 'kl' (to the model's own next-token distributions) or 'tokens' "
        "(cross-entropy on the base model's answer).",
    )
    max_retention_drop: float | None = Field(None, ge=0, description="Auditor's retention limit (default: its own).")
    max_earlier_drop: float | None = Field(
        None, ge=0, le=1, description="Auditor's limit on an earlier passage's answer-recall drop (default: its own)."
    )
    probes: Path | None = Field(None, description="Auditor's protected-probes file (default: the built-in set).")
    probe_answers_may_lose: int | None = Field(
        None, ge=0, description="Answer probes a candidate may stop answering right (default: the auditor's, 1)."
    )
    promote: Literal["accepted", "none"] = Field(
        "accepted",
        description="'accepted': promote each passage's best accepted adapter before the next passage is "
        "adapted (it then trains on top of it and is judged against it); 'none': promote nothing.",
    )
    rehearsal: int = Field(
        0, ge=0, le=64, description="Earlier accepted self-edits mixed into each new candidate's training; 0: none."
    )
    documents: DocumentTauConfig = Field(
        default_factory=DocumentTauConfig, description="Passages and τ (the PATHs fill --documents.paths)."
    )
