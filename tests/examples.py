"""One realistic instance of every message body, for round-trip and transport tests."""

from __future__ import annotations

from protocol.messages import (
    AdapterRef,
    AnswerQuestions,
    Answers,
    AnswerServed,
    ApplySelfEdits,
    Body,
    Candidate,
    CandidateForReview,
    CandidatesTrained,
    Context,
    DescribeServed,
    DescribeStudent,
    ErrorReply,
    JudgeCandidates,
    ModelAnswers,
    Ping,
    Pong,
    Promote,
    Review,
    Reviews,
    ReviewSelfEdits,
    Rollback,
    SamplingSettings,
    Scores,
    SelfEdit,
    ServedState,
    StudentInfo,
    TrainJob,
    TrainSettings,
    Verdict,
    Verdicts,
    Veto,
)

CONTEXT = Context(context_id="c1", title="Ostrevane", text="Ostrevane is a town founded in 1873 by Ilsabet Quorne.")
SELF_EDIT = SelfEdit(
    self_edit_id="e1",
    context_id="c1",
    format="implications",
    text="Ostrevane dates from 1873.\nQuorne founded it.",
    prompt="Read the passage...",
    teacher_model="tiny",
    teacher_version="v0",
    sampling=SamplingSettings(seed=3),
)
ADAPTER = AdapterRef(adapter_id="ab" * 32, uri="/tmp/store/adapters/" + "ab" * 32, base_model="tiny")
CANDIDATE = Candidate(
    adapter=ADAPTER,
    self_edit_id="e1",
    settings=TrainSettings(rank=4),
    num_sequences=3,
    steps=10,
    losses=[2.5, 1.0],
    seconds=1.5,
)
SCORES = Scores(exact_match=0.0, f1=0.2, loglik=-3.5, n_questions=5)
VERDICT = Verdict(
    context_id="c1",
    self_edit_id="e1",
    adapter_id="ab" * 32,
    accepted=True,
    metric="loglik",
    reward=0.7,
    base=SCORES,
    candidate=SCORES.model_copy(update={"loglik": -2.8}),
    retention_drop=0.01,
    vetoes=[Veto(reviewer="rules", reason="none")],
    reason="gain",
    ledger_entry="cd" * 32,
)

EXAMPLES: list[Body] = [
    Ping(),
    Pong(role="student", busy=True),
    ErrorReply(reason="validation", detail="bad", field="jobs.0.context"),
    DescribeStudent(),
    StudentInfo(base_model="tiny", device="cpu", default_settings=TrainSettings()),
    ApplySelfEdits(jobs=[TrainJob(context=CONTEXT, self_edit=SELF_EDIT, settings=TrainSettings(epochs=2))]),
    CandidatesTrained(candidates=[CANDIDATE]),
    AnswerQuestions(questions=["Who founded Ostrevane?"], adapter_ids=[None, "ab" * 32]),
    Answers(results=[ModelAnswers(adapter_id=None, answers=["Quorne"])]),
    JudgeCandidates(context_id="c1", candidates=[CandidateForReview(self_edit=SELF_EDIT, candidate=CANDIDATE)]),
    Verdicts(verdicts=[VERDICT]),
    ReviewSelfEdits(self_edits=[SELF_EDIT]),
    Reviews(reviews=[Review(self_edit_id="e1", vetoes=[Veto(reviewer="rules", reason="contains an API key")])]),
    Promote(adapter_id="ab" * 32, verdict=VERDICT),
    Rollback(to="base"),
    DescribeServed(),
    ServedState(version=2, stack=["ab" * 32], verdicts={"ab" * 32: "cd" * 32}),
    AnswerServed(questions=["Who founded Ostrevane?"], shadow="ab" * 32),
]
