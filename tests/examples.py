"""One realistic instance of every message body, for round-trip and transport tests."""

from __future__ import annotations

from protocol.fewshot import ArcGrade, ArcPair, ArcPrediction, ArcTask, FewShotSelfEdit
from protocol.fewshot_messages import (
    AnswerTask,
    GradeInContext,
    InContextGraded,
    JudgeTask,
    TaskAnswers,
    TaskTrained,
    TrainTask,
    TTTCandidate,
)
from protocol.messages import (
    AdapterRef,
    AnswerQuestions,
    Answers,
    AnswerServed,
    ApplySelfEdits,
    Body,
    Candidate,
    CandidatesTrained,
    CandidateToJudge,
    Context,
    DescribeServed,
    DescribeStudent,
    ErrorReply,
    JudgeCandidates,
    ModelAnswers,
    Ping,
    Pong,
    Promote,
    RecordTeacherVersion,
    Review,
    Reviews,
    ReviewSelfEdits,
    Rollback,
    SamplingConfig,
    Scores,
    SelfEdit,
    ServedStack,
    StudentInfo,
    TeacherVersionRecorded,
    TrainConfig,
    TrainJob,
    Verdict,
    Verdicts,
    VersionExample,
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
    sampling=SamplingConfig(seed=3),
)
ADAPTER = AdapterRef(adapter_id="ab" * 32, uri="/tmp/store/adapters/" + "ab" * 32, base_model="tiny")
CANDIDATE = Candidate(
    adapter=ADAPTER,
    self_edit_id="e1",
    settings=TrainConfig(rank=4),
    num_sequences=3,
    steps=10,
    losses=[2.5, 1.0],
    seconds=1.5,
)
SCORES = Scores(exact_match=0.0, f1=0.2, loglik=-3.5, answer_recall=0.4, n_questions=5)
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

RECIPE = FewShotSelfEdit(
    use_basic_augmentations=True,
    use_size_augmentations=False,
    use_chain_augmentations=False,
    use_repeat_augmentations=False,
    permute_colors=True,
    permute_examples=False,
    strategy="output_tokens",
    learning_rate=1e-4,
    num_train_epochs=2,
)
ARC_TASK = ArcTask(task_id="t1", train=[ArcPair(input=[[1, 0]], output=[[0, 1]])], test_inputs=[[[2, 0]]])
FEWSHOT_EDIT = SELF_EDIT.model_copy(update={"format": "fewshot", "context_id": "t1", "text": RECIPE.model_dump_json()})
TTT = TTTCandidate(task_id="t1", self_edit_id="e1", adapter=ADAPTER, num_examples=3, losses=[0.9], seconds=1.5)
FEWSHOT_EXAMPLES: list[Body] = [
    TrainTask(task=ARC_TASK, self_edit=FEWSHOT_EDIT),
    TaskTrained(candidate=TTT),
    AnswerTask(task=ARC_TASK, adapter_id="ab" * 32),
    TaskAnswers(prediction=ArcPrediction(task_id="t1", attempts=[[[[0, 2]]]], votes=[[2]], adapter_id="ab" * 32)),
    JudgeTask(task_id="t1", self_edit=FEWSHOT_EDIT, candidate=TTT),
    GradeInContext(task_id="t1"),
    InContextGraded(grade=ArcGrade(task_id="t1", solved=False, correct=[False])),
]
EXAMPLES: list[Body] = [
    Ping(),
    Pong(role="student", busy=True),
    ErrorReply(reason="validation", detail="bad", field="jobs.0.context"),
    DescribeStudent(),
    StudentInfo(base_model="tiny", device="cpu", default_settings=TrainConfig()),
    ApplySelfEdits(jobs=[TrainJob(context=CONTEXT, self_edit=SELF_EDIT, settings=TrainConfig(epochs=2))]),
    CandidatesTrained(candidates=[CANDIDATE]),
    AnswerQuestions(questions=["Who founded Ostrevane?"], adapter_ids=[None, "ab" * 32]),
    Answers(results=[ModelAnswers(adapter_id=None, answers=["Quorne"])]),
    JudgeCandidates(context_id="c1", candidates=[CandidateToJudge(self_edit=SELF_EDIT, candidate=CANDIDATE)]),
    Verdicts(verdicts=[VERDICT]),
    ReviewSelfEdits(self_edits=[SELF_EDIT]),
    Reviews(reviews=[Review(self_edit_id="e1", vetoes=[Veto(reviewer="rules", reason="contains an API key")])]),
    Promote(adapter_id="ab" * 32, verdict=VERDICT),
    Rollback(to="base"),
    DescribeServed(),
    ServedStack(version=2, stack=["ab" * 32], verdicts={"ab" * 32: "cd" * 32}),
    AnswerServed(questions=["Who founded Ostrevane?"], shadow="ab" * 32),
    RecordTeacherVersion(
        version="v1",
        round=0,
        kind="lora",
        teacher_model="tiny",
        artifact_sha256="ab" * 32,
        data_sha256="cd" * 32,
        examples=[VersionExample(context_id="c1", self_edit_id="e1", reward=0.4, verdict_entries=["ef" * 32])],
        settings={"rank": 16, "learning_rate": 3e-4},
        losses=[1.5, 0.9],
    ),
    TeacherVersionRecorded(ledger_entry="ef" * 32),
    *FEWSHOT_EXAMPLES,
]
