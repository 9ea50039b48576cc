"""The auditor's side of few-shot (ARC) ReST^EM: grade each sampled self-edit, write the verdict to the ledger.

It holds the answer grids (an :class:`~auditor.arc_grading.ArcGrader`) and a ledger. Grading the
student's prediction for a self-edit appends a ``verdict`` entry shaped like the knowledge domain's
(``record["verdict"]``: self-edit id, context id = the task id, accepted = solved, no vetoes, reward
1.0 when solved and 0.0 otherwise; ``record["self_edit"]``: the prompt and the completion text the
teacher would be fine-tuned on), so a few-shot teacher version is checked against these verdicts and
recorded by :func:`auditor.teacher_versions.record_teacher_version`, exactly as a knowledge one.
A self-edit is judged once: grading it again (a resumed run) returns its first verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditor.arc_grading import ArcGrader
from auditor.teacher_versions import record_teacher_version
from library.ledger import Ledger
from protocol.fewshot import ArcGrade, ArcPrediction, FewShotProposal, FewShotSelfEdit
from protocol.messages import RecordTeacherVersion, TeacherVersionRecorded

METRIC = "arc_exact"
"""Solved: every test input has an exactly matching attempt (:class:`~auditor.arc_grading.ArcGrader`)."""


@dataclass(frozen=True)
class ArcVerdict:
    """The auditor's verdict on one self-edit: the grade, its reward and the ledger entry that holds it."""

    grade: ArcGrade
    reward: float
    ledger_entry: str


class ArcAuditor:
    """Grades few-shot self-edits into ``ledger`` and records teacher versions against those verdicts.

    ``ledger`` is opened once by the caller (one writer per ledger file) and must stay open while this is used.
    """

    def __init__(self, grader: ArcGrader, ledger: Ledger, student_model: str = ""):
        self.grader = grader
        self.ledger = ledger
        self.student_model = student_model
        self._judged = {
            (e["record"]["verdict"]["context_id"], e["record"]["verdict"]["self_edit_id"]): e
            for e in ledger.entries()
            if e["kind"] == "verdict"
        }

    def judge(self, proposal: FewShotProposal, completion: str, prediction: ArcPrediction) -> ArcVerdict:
        """Grade the student's ``prediction`` after training on ``proposal``'s self-edit; append the verdict.

        ``completion`` is the text the teacher would be fine-tuned to write for it; it must be that self-edit.
        """
        _check_sample(proposal, completion, prediction)
        earlier = self._judged.get((proposal.task_id, proposal.proposal_id))
        if earlier is not None:
            return _from_entry(earlier)
        grade = self.grader.grade(prediction)
        reward = 1.0 if grade.solved else 0.0
        record = self._record(proposal, completion, prediction, grade, reward)
        entry = self.ledger.append("verdict", record)
        self._judged[(proposal.task_id, proposal.proposal_id)] = {"hash": entry, "record": record}
        return ArcVerdict(grade, reward, entry)

    def record_teacher_version(self, request: RecordTeacherVersion, timeout_s: float = 0.0) -> TeacherVersionRecorded:
        """Check every claimed reward against this ledger's verdicts, then record the version (in process:
        ``timeout_s`` is not used)."""
        return record_teacher_version(self.ledger, request)

    def _record(
        self, proposal: FewShotProposal, completion: str, prediction: ArcPrediction, grade: ArcGrade, reward: float
    ) -> dict[str, Any]:
        reason = "solved" if grade.solved else f"not solved: {sum(grade.correct)}/{len(grade.correct)} test inputs"
        adapter_id = prediction.adapter_id or ""
        verdict = {
            "context_id": proposal.task_id,
            "self_edit_id": proposal.proposal_id,
            "adapter_id": adapter_id,
            "accepted": grade.solved,
            "metric": METRIC,
            "reward": reward,
            "vetoes": [],
            "reason": reason,
        }
        self_edit = {
            "self_edit_id": proposal.proposal_id,
            "context_id": proposal.task_id,
            "prompt": proposal.prompt,
            "text": completion,
            "teacher_model": proposal.teacher_model,
            "teacher_version": proposal.teacher_version,
        }
        return {
            "adapter_id": adapter_id,
            "context_id": proposal.task_id,
            "accepted": grade.solved,
            "reason": reason,
            "student_model": self.student_model,
            "verdict": verdict,
            "self_edit": self_edit,
            "grade": grade.model_dump(mode="json"),
        }


def _check_sample(proposal: FewShotProposal, completion: str, prediction: ArcPrediction) -> None:
    """The verdict must be about what was trained: the same task, and a completion that is that self-edit."""
    if proposal.self_edit is None:
        raise ValueError(f"proposal {proposal.proposal_id} has no valid self-edit: there is nothing to judge")
    if prediction.task_id != proposal.task_id:
        raise ValueError(f"prediction for {prediction.task_id} judged as one for {proposal.task_id}")
    if FewShotSelfEdit.model_validate_json(completion) != proposal.self_edit:
        raise ValueError(f"completion of {proposal.proposal_id} is not the self-edit the student trained on")


def _from_entry(entry: dict[str, Any]) -> ArcVerdict:
    record = entry["record"]
    return ArcVerdict(ArcGrade.model_validate(record["grade"]), record["verdict"]["reward"], entry["hash"])
