"""The few-shot (ARC) message family: what crosses the student's and the auditor's sockets for ARC tasks.

The split of a task instance is kept by the types: an :class:`~protocol.fewshot.ArcTask` (demonstrations
and test *inputs*) is all the teacher and the student ever receive; no message carries a test output
grid, so the answer grids stay in the auditor process, which reads them from its solutions file.

The teacher's self-edit travels as a :class:`~protocol.messages.SelfEdit` of format ``"fewshot"`` whose
text is the canonical JSON of a :class:`~protocol.fewshot.FewShotSelfEdit` (checked when a request is
decoded), so it is hashed, signed, reviewed and recorded exactly as a knowledge self-edit is. The
student answers a :class:`TrainTask` with a :class:`TTTCandidate` (the test-time adapter in the store);
the auditor asks the student for that adapter's answers itself (:class:`AnswerTask`), grades them by
exact match and returns a signed :class:`~protocol.messages.Verdict` (metric ``"arc_exact"``: accepted
= solved, reward 1 or 0; ``base`` and ``candidate`` scores are the share of test inputs matched in context
and after test-time training).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from protocol.fewshot import ArcGrade, ArcPrediction, ArcTask, FewShotSelfEdit
from protocol.messages import (
    AdapterId,
    AdapterRef,
    Body,
    ErrorReply,
    Ping,
    Pong,
    RecordTeacherVersion,
    SelfEdit,
    TeacherVersionRecorded,
    Verdicts,
)

FEWSHOT_FORMAT = "fewshot"
"""The :class:`~protocol.messages.SelfEdit` format of an ARC recipe."""


def recipe_of(self_edit: SelfEdit) -> FewShotSelfEdit:
    """The recipe a few-shot self-edit's text holds; ValueError when it is not one."""
    if self_edit.format != FEWSHOT_FORMAT:
        raise ValueError(f"a few-shot self-edit has format {FEWSHOT_FORMAT!r}, not {self_edit.format!r}")
    return FewShotSelfEdit.model_validate_json(self_edit.text)


class _CarriesRecipe(Body):
    """A body whose ``self_edit`` must be a valid few-shot recipe (a bad one is a typed validation error)."""

    self_edit: SelfEdit = Field(description="Format 'fewshot'; its text is the FewShotSelfEdit JSON.")

    @model_validator(mode="after")
    def _recipe_parses(self) -> _CarriesRecipe:
        recipe_of(self.self_edit)
        return self


class TTTCandidate(Body):
    """The student's test-time-training candidate for one task and self-edit."""

    task_id: str = Field(min_length=1)
    self_edit_id: str = Field(min_length=1)
    adapter: AdapterRef | None = Field(description="The trained adapter in the store; None when skipped.")
    num_examples: int = Field(0, ge=0, description="Augmented training examples it was trained on.")
    losses: list[float] = Field(default_factory=list, description="Mean training loss per epoch.")
    seconds: float = Field(0.0, ge=0)
    skipped: str | None = Field(None, description="Why the task was not trained (e.g. too long for the student).")


# --------------------------------------------------------------------------- student channel


class TrainTask(_CarriesRecipe):
    """Train a fresh test-time adapter on ``task``'s demonstrations, following the self-edit's recipe."""

    type: Literal["train_task"] = "train_task"
    task: ArcTask


class TaskTrained(Body):
    type: Literal["task_trained"] = "task_trained"
    candidate: TTTCandidate


class AnswerTask(Body):
    """Answer every test input of ``task``: with the adapter under the student's views, or in context (None)."""

    type: Literal["answer_task"] = "answer_task"
    task: ArcTask
    adapter_id: AdapterId | None = Field(None, description="None: the base model, in context only.")


class TaskAnswers(Body):
    type: Literal["task_answers"] = "task_answers"
    prediction: ArcPrediction


# --------------------------------------------------------------------------- auditor channel


class JudgeTask(_CarriesRecipe):
    """Ask for the verdict on a candidate: the auditor has the student answer with it, then grades."""

    type: Literal["judge_task"] = "judge_task"
    task_id: str = Field(min_length=1)
    candidate: TTTCandidate


class GradeInContext(Body):
    """Ask how the unadapted student does on a task (nothing is trained, nothing is recorded)."""

    type: Literal["grade_in_context"] = "grade_in_context"
    task_id: str = Field(min_length=1)


class InContextGraded(Body):
    type: Literal["in_context_graded"] = "in_context_graded"
    grade: ArcGrade


FewShotStudentRequest = Annotated[Ping | TrainTask | AnswerTask, Field(discriminator="type")]
FewShotStudentReply = Annotated[Pong | TaskTrained | TaskAnswers | ErrorReply, Field(discriminator="type")]
FewShotAuditorRequest = Annotated[Ping | JudgeTask | GradeInContext | RecordTeacherVersion, Field(discriminator="type")]
FewShotAuditorReply = Annotated[
    Pong | Verdicts | InContextGraded | TeacherVersionRecorded | ErrorReply, Field(discriminator="type")
]
