"""The auditor's configuration: what it holds, how it decides, where it records."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from auditor.judge_metric import JudgeConfig
from auditor.reviewer import ReviewerConfig
from auditor.tau_config import DocumentTauConfig
from library.model_specs import DEFAULT_MODEL, DTypeName
from library.ray_pool import WorkersConfig
from protocol.messages import Metric


class AuditorConfig(WorkersConfig):
    """Everything the auditor process needs to start (``--workers N``: its scoring on Ray actors)."""

    model_config = ConfigDict(extra="forbid")

    data: Path | None = Field(
        None, description="SQuAD-format file holding τ (questions and answers); default: the demo set."
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N passages of --data.")
    per_title: int | None = Field(
        None, ge=1, description="Take at most N passages of each title of --data, before --limit (None: all)."
    )
    documents: DocumentTauConfig = Field(
        default_factory=DocumentTauConfig, description="τ written from documents the auditor reads (seal adapt)."
    )
    retention: Path | None = Field(None, description="Retention questions file; default: the built-in set.")
    model: str = Field(DEFAULT_MODEL, description="The student's base model, loaded here to score answer likelihoods.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda' for the scoring model.")
    dtype: DTypeName = Field(
        "auto",
        description="Weights' dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32' or 'bfloat16' "
        "(on a CPU with AVX512-BF16 or AMX about 1.5x faster, with coarser likelihoods).",
    )
    store: Path = Field(Path("runs/store"), description="Artifact store shared with the student (read-only here).")
    ledger: Path = Field(Path("runs/ledger.jsonl"), description="Append-only, hash-chained decision ledger.")
    metric: Metric = Field(
        "loglik",
        description="Score whose gain is the reward and decides acceptance: loglik, f1, exact_match, answer_recall "
        "or judge (needs --judge.model).",
    )
    min_gain: float = Field(0.05, description="Accept only if the candidate beats the base model by at least this.")
    max_retention_drop: float = Field(
        1.0, ge=0, description="Reject if the base model's own retention answers lose more than this (nats/token)."
    )
    max_earlier_drop: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Reject if a passage the served stack learned earlier loses more answer recall than this "
        "(0.2: one of five questions).",
    )
    answer_instruction: str | None = Field(
        None,
        max_length=2000,  # what an answer_questions request may carry
        description="Instruction put before every question the student answers (and the auditor scores); "
        "default: ask for only the short answer; '' for none.",
    )
    student_timeout_s: float = Field(900, gt=0, description="Seconds to wait for the student's answers.")
    deny_patterns: list[str] = Field(default_factory=list, description="Regular expressions that veto a self-edit.")
    probes: Path | None = Field(None, description="Protected-behaviour probes file; default: the built-in set.")
    probe_min_agreement: float = Field(
        0.5, ge=0, le=1, description="Least F1 between base and candidate answers to an 'unchanged' probe."
    )
    probe_answers_may_lose: int = Field(
        1,
        ge=0,
        description="How many 'answer' probes the base model answers right the candidate may stop answering right "
        "before they veto it: the built-in nine are a public sample of general knowledge that measures collateral "
        "forgetting (one flipped fact is common for a harmless edit); 0 makes each of your own facts a veto.",
    )
    probe_tokens: int = Field(48, ge=1, le=1024, description="Most tokens the student may generate per probe.")
    answer_tokens: int = Field(24, ge=1, le=1024, description="Most tokens the student may generate per answer.")
    judge: JudgeConfig | None = Field(None, description="The LLM judge of --metric judge (held by the auditor only).")
    reviewer: ReviewerConfig | None = Field(
        None, description="An optional reviewer model that reads self-edits and probe answers, and can veto."
    )

    @model_validator(mode="after")
    def _judge_for_judge_metric(self) -> AuditorConfig:
        if self.metric == "judge" and self.judge is None:
            raise ValueError("metric 'judge' needs a judge: give --judge.model openai:MODEL (or anthropic:MODEL)")
        if self.metric == "judge" and self.documents.paths:
            raise ValueError(
                "metric 'judge' does not yet split its judgements into τ's reward and sealed acceptance sets: "
                "use another --metric with --documents.paths (seal adapt)"
            )
        return self
