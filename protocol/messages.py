"""The message catalogue: every body that crosses a seal socket.

Each socket carries one tagged union per direction (a *channel*): the student
channel and the auditor channel. A body's ``type`` field is the tag; the
envelope around it (a header: protocol version, ids, sender, timestamp) is
declared in :mod:`protocol.codec`. Large payloads (adapter weights) never travel here:
messages carry an :class:`AdapterRef` (content hash + location) into the
artifact store instead.

Glossary: *context* (C) is a document the student should learn; *τ* are the
auditor's questions and answers about it; a *self-edit* is the teacher's
synthetic training data for a context; a *candidate* is an adapter trained
from one self-edit; a *verdict* is the auditor's decision on a candidate, and
its *reward* is what the teacher learns from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["teacher", "student", "auditor", "cli"]
SelfEditFormat = Literal["implications", "rewrite", "self_qa", "passage_only", "recorded", "fewshot"]
"""'fewshot': an ARC training recipe, the JSON of :class:`protocol.fewshot.FewShotSelfEdit` (see fewshot_messages)."""
ErrorReason = Literal[
    "undecodable",
    "unknown_type",
    "protocol_version",
    "validation",
    "oversized",
    "unsupported",
    "forbidden",
    "refused",
    "internal",
    "worker_failed",  # a Ray worker died more often than the role allows (library.ray_pool)
]
Metric = Literal["loglik", "f1", "exact_match", "answer_recall", "judge"]
VerdictMetric = Metric | Literal["arc_exact"]
"""What a verdict's reward measures: a knowledge metric, or 'arc_exact' (few-shot: every test grid matched)."""
# An adapter's id is the sha256 of its weights and config: requests can name nothing else (no paths).
AdapterId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of an adapter's weights and config.")]


class Body(BaseModel):
    """Base of every message body: strict (unknown fields are errors) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- shared records


class Context(Body):
    """A document the student should learn (C). Carries no questions or answers."""

    context_id: str = Field(min_length=1, description="Stable id shared by the teacher's and auditor's data.")
    title: str = ""
    text: str = Field(min_length=1)


class SamplingConfig(Body):
    """How the teacher sampled a self-edit."""

    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1, le=8192)
    seed: int = 0


class Usage(Body):
    """What sampling one self-edit cost: tokens in and out, and the price where it is known."""

    input_tokens: int = Field(ge=0, description="Prompt tokens (a share of them when one request gave several).")
    output_tokens: int = Field(ge=0, description="Generated tokens.")
    estimated_cost_usd: float | None = Field(None, ge=0, description="At list prices; None where unknown or local.")


class SelfEdit(Body):
    """Synthetic training data proposed by the teacher for one context."""

    self_edit_id: str = Field(min_length=1)
    context_id: str = Field(min_length=1)
    format: SelfEditFormat
    text: str = Field(description="The self-edit as generated (its training items: library.self_edit_items).")
    prompt: str = Field(description="The exact prompt the teacher was given.")
    teacher_model: str
    teacher_version: str
    sampling: SamplingConfig | None = None
    usage: Usage | None = Field(None, description="Tokens and estimated cost of sampling this self-edit.")


class TrainConfig(Body):
    """LoRA hyperparameters for one candidate: the paper's r=32, α=64, with lr 3e-4 and 3 epochs, not its 1e-3 x 10.

    Measured on the embedded default model (``bench/results/probe_loss/``, one passage adapter per demo document):
    the paper's rate and epochs (set for a 7B model) made each adapter forget 6.8 of the 9 facts of the
    auditor's built-in answer probes on average, so it vetoed them all; 3e-4 x 3 loses 1.0 (8 of 10 within
    its default allowance of one), with a likelihood gain on τ of 0.97 nats/token against 2.95, but no greedy
    answer learned (0 of 50 against 20 of 50). :data:`PAPER_TRAIN` is the paper's, for its replications.
    """

    rank: int = Field(32, ge=1, le=1024, description="LoRA rank r.")
    alpha: float = Field(64.0, gt=0, description="LoRA scaling numerator α (scale = α / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )
    learning_rate: float = Field(3e-4, gt=0, le=1.0, description="AdamW learning rate.")
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training sequences.")
    batch_size: int = Field(8, ge=1, le=4096, description="Sequences per optimizer step.")
    max_length: int = Field(256, ge=8, le=32768, description="Training sequences are truncated to this.")
    include_context: bool = Field(True, description="Add the passage itself as one more training sequence.")
    anchors: int = Field(
        0,
        ge=0,
        le=1000,
        exclude_if=lambda v: v == 0,  # absent when unused: settings recorded before it existed keep their hashes
        description="Sequences of the base model's own answers to general questions trained beside the self-edit, "
        "to keep what it knew (student/anchors.py); 0: none.",
    )
    anchor_loss: Literal["tokens", "kl"] = Field(
        "tokens",
        exclude_if=lambda v: v == "tokens",  # absent when the default: earlier settings keep their hashes
        description="How anchors are trained: 'tokens' (cross-entropy on the base model's greedy answer) or 'kl' "
        "(KL divergence to the model's own next-token distributions before training, at every position).",
    )
    seed: int = Field(0, description="Seed for LoRA initialisation and data order.")


PAPER_TRAIN = TrainConfig(learning_rate=1e-3, epochs=10)
"""The SEAL paper's LoRA settings (r=32, α=64, lr 1e-3, 10 epochs), for the benches that replicate it."""


class TrainJob(Body):
    """One self-edit to apply to the student's base model."""

    context: Context
    self_edit: SelfEdit
    settings: TrainConfig | None = Field(None, description="None: the student's configured defaults.")
    on_top_of: list[AdapterId] = Field(
        default_factory=list, description="Train on top of these adapters (bottom first, frozen): the served stack."
    )
    rehearsal: list[SelfEdit] = Field(
        default_factory=list, description="Earlier accepted self-edits whose lines are mixed into the training."
    )
    anchor_texts: list[str] = Field(
        default_factory=list,
        exclude_if=lambda v: not v,
        description="Filled in by the student from its own base model (`settings.anchors` of them); "
        "whatever a client sends here is replaced.",
    )


class AdapterRef(Body):
    """Where a candidate adapter lives: its content hash is its id."""

    adapter_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of weights and config.")
    uri: str = Field(description="Location in the artifact store (a local path for file stores).")
    base_model: str = Field(description="The base model the adapter applies to.")


class Candidate(Body):
    """An adapter trained from one self-edit, with what it took to train it."""

    adapter: AdapterRef
    self_edit_id: str
    settings: TrainConfig
    num_sequences: int = Field(ge=0)
    steps: int = Field(ge=0)
    losses: list[float] = Field(description="Mean training loss per epoch.")
    seconds: float = Field(ge=0)


class ModelAnswers(Body):
    """A model's answers to a list of questions, in order."""

    adapter_id: str | None = Field(description="None: the unadapted base model.")
    answers: list[str]


class Scores(Body):
    """Aggregate scores of one model on τ."""

    exact_match: float
    f1: float
    loglik: float = Field(description="Gold answers' mean per-token log-likelihood (nats).")
    answer_recall: float | None = Field(
        None,
        exclude_if=lambda v: v is None,  # absent in verdicts signed before it existed (and in few-shot ones)
        description="Share of questions whose answer contains a gold answer (normalised).",
    )
    n_questions: int
    judge: float | None = Field(
        None,
        exclude_if=lambda v: v is None,  # absent unless judged: earlier verdicts' signatures stay valid
        description="Share judged right by the auditor's LLM judge, over the questions judged for both models.",
    )


class Veto(Body):
    """A safety reviewer's objection; any veto blocks acceptance."""

    reviewer: str
    reason: str


class Verdict(Body):
    """The auditor's decision on one candidate; ``reward`` is the teacher's reward."""

    context_id: str
    self_edit_id: str
    adapter_id: str
    accepted: bool
    metric: VerdictMetric
    reward: float = Field(
        description="Gain on `metric` of the candidate over the model it was judged against (the base, or the served "
        "stack): on τ's reward set when τ is split (then `base`, `candidate` and `reason` are the acceptance set's)."
    )
    base: Scores = Field(description="The model the candidate is judged against: the base, or the served stack.")
    candidate: Scores
    retention_drop: float = Field(description="Base minus candidate retention score (nats/token).")
    earlier_drop: float = Field(
        0.0,
        exclude_if=lambda v: v == 0.0,  # absent when nothing was replayed: earlier verdicts' signatures stay valid
        description="Largest drop in answer recall on a passage accepted earlier (before minus candidate).",
    )
    on_top_of: list[str] = Field(
        default_factory=list,
        exclude_if=lambda v: not v,  # absent when judged against the base model: earlier signatures stay valid
        description="The served stack the candidate was trained on top of and judged against (empty: the base "
        "model); the registry promotes it only onto that very stack.",
    )
    vetoes: list[Veto] = []
    reason: str
    self_edit_sha256: str = Field("", description="sha256 of the self-edit as judged (canonical JSON).")
    ledger_entry: str = Field(description="Hash of the ledger entry that records this verdict.")
    signer: str | None = Field(None, description="The auditor's Ed25519 public key (hex).")
    signature: str | None = Field(None, description="Ed25519 signature over every other field (hex).")


# --------------------------------------------------------------------------- common bodies


class Ping(Body):
    """Liveness probe; answered by the I/O thread even while the worker is busy."""

    type: Literal["ping"] = "ping"


class Pong(Body):
    type: Literal["pong"] = "pong"
    role: Role
    busy: bool = False


class ErrorReply(Body):
    """A request that could not be served. The server goes on serving."""

    type: Literal["error"] = "error"
    reason: ErrorReason
    detail: str
    field: str | None = Field(None, description="The offending field's dotted path, where there is one.")


# --------------------------------------------------------------------------- student channel


class DescribeStudent(Body):
    type: Literal["describe_student"] = "describe_student"


class StudentInfo(Body):
    type: Literal["student_info"] = "student_info"
    base_model: str
    device: str
    default_settings: TrainConfig


class ApplySelfEdits(Body):
    """Train one candidate adapter per job. Batch-shaped: the student may train them together."""

    type: Literal["apply_self_edits"] = "apply_self_edits"
    jobs: list[TrainJob] = Field(min_length=1)


class CandidatesTrained(Body):
    type: Literal["candidates_trained"] = "candidates_trained"
    candidates: list[Candidate] = Field(description="One per job, in the jobs' order.")


class AnswerQuestions(Body):
    """Answer every question with every listed model, greedily and closed-book."""

    type: Literal["answer_questions"] = "answer_questions"
    questions: list[str] = Field(min_length=1)
    adapter_ids: list[AdapterId | None] = Field(min_length=1, description="None stands for the base model.")
    max_new_tokens: int = Field(32, ge=1, le=1024)
    instruction: str | None = Field(
        None, max_length=2000, description="Answer instruction before each question; None: the standard one, '': none."
    )
    stack: list[AdapterId] = Field(
        default_factory=list,
        description="Adapters (bottom first) under every model: None is then this stack, an adapter on top of it.",
    )


class Answers(Body):
    type: Literal["answers"] = "answers"
    results: list[ModelAnswers] = Field(description="One per requested model, in request order.")


class Promote(Body):
    """Serve ``adapter_id`` on top of the current stack; only a valid, signed, accepting verdict allows it."""

    type: Literal["promote"] = "promote"
    adapter_id: AdapterId
    verdict: Verdict


class Rollback(Body):
    """Drop the top adapter, or all above ``to`` (an adapter id or prefix, or "base")."""

    type: Literal["rollback"] = "rollback"
    to: str | None = Field(None, pattern=r"^(base|[0-9a-f]{1,64})$", description='An adapter id prefix, or "base".')


class DescribeServed(Body):
    type: Literal["describe_served"] = "describe_served"


class ServedStack(Body):
    """The served stack (bottom first) and the ledger entries of the verdicts that admitted each adapter."""

    type: Literal["served_stack"] = "served_stack"
    version: int
    stack: list[str]
    verdicts: dict[str, str]


class AnswerServed(Body):
    """Answer with the served model; with ``shadow``, also with that adapter on top (shadow mode)."""

    type: Literal["answer_served"] = "answer_served"
    questions: list[str] = Field(min_length=1)
    shadow: AdapterId | None = None
    max_new_tokens: int = Field(32, ge=1, le=1024)


# --------------------------------------------------------------------------- auditor channel


class CandidateToJudge(Body):
    """A trained candidate and the self-edit it was trained from, for the auditor to judge."""

    self_edit: SelfEdit
    candidate: Candidate


class JudgeCandidates(Body):
    """Ask the auditor for verdicts on candidates trained for one context."""

    type: Literal["judge_candidates"] = "judge_candidates"
    context_id: str
    candidates: list[CandidateToJudge] = Field(min_length=1)


class Verdicts(Body):
    type: Literal["verdicts"] = "verdicts"
    verdicts: list[Verdict]


class ReviewSelfEdits(Body):
    """Ask the auditor's text rules about self-edits before any training."""

    type: Literal["review_self_edits"] = "review_self_edits"
    self_edits: list[SelfEdit] = Field(min_length=1)


class Review(Body):
    self_edit_id: str
    vetoes: list[Veto] = Field(description="Empty: no rule objects.")


class Reviews(Body):
    type: Literal["reviews"] = "reviews"
    reviews: list[Review] = Field(description="One per self-edit, in request order.")


class VersionExample(Body):
    """One kept self-edit behind a teacher version, and the verdicts (ledger entries) that rewarded it."""

    context_id: str
    self_edit_id: str
    reward: float = Field(description="Mean reward over the self-edit's verdicts.")
    verdict_entries: list[str] = Field(min_length=1, description="Ledger hashes of those verdicts.")


class RecordTeacherVersion(Body):
    """Ask the auditor to record a new teacher version and the exact data it was made from.

    The auditor checks every claimed reward against the verdicts in its own ledger before recording.
    """

    type: Literal["record_teacher_version"] = "record_teacher_version"
    version: str = Field(min_length=1, description="e.g. 'v1'.")
    round: int = Field(ge=0, description="The ReST^EM round whose rewards made this version.")
    kind: Literal["lora", "exemplars"] = Field(description="A LoRA on the teacher, or an API teacher's exemplars.")
    teacher_model: str
    artifact_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Content hash of the adapter or bank.")
    data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the training pairs.")
    examples: list[VersionExample]
    settings: dict[str, Any] = Field(default_factory=dict, description="How the version was trained.")
    losses: list[float] = []


class TeacherVersionRecorded(Body):
    type: Literal["teacher_version_recorded"] = "teacher_version_recorded"
    ledger_entry: str


StudentRequest = Annotated[
    Ping | DescribeStudent | ApplySelfEdits | AnswerQuestions | Promote | Rollback | DescribeServed | AnswerServed,
    Field(discriminator="type"),
]
StudentReply = Annotated[
    Pong | StudentInfo | CandidatesTrained | Answers | ServedStack | ErrorReply, Field(discriminator="type")
]
AuditorRequest = Annotated[Ping | JudgeCandidates | ReviewSelfEdits | RecordTeacherVersion, Field(discriminator="type")]
AuditorReply = Annotated[Pong | Verdicts | Reviews | TeacherVersionRecorded | ErrorReply, Field(discriminator="type")]
