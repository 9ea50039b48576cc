"""The few-shot auditor's request handler: exact-match verdicts on test-time adapters, signed and recorded.

Entry point: ``seal fewshot auditor --bind tcp://127.0.0.1:5556 --student tcp://127.0.0.1:5555 --data FILE``.

It alone reads the answer grids (the solutions file, :func:`library.arc.load_solutions`); it reads the
tasks themselves from its own copy of the challenges file. For each candidate it checks the adapter
against the store (intact, for its base model, trained from the self-edit judged and on this very task,
by the task's content id), asks the student for the adapter's answers to the task's test inputs, and
grades them against the grids (:class:`auditor.arc_grading.ArcGrader`). The verdict (metric
``arc_exact``: accepted = solved, reward 1.0 or 0.0; base and candidate scores are the share of test
inputs matched in context and after training) is signed with the auditor's key as a knowledge
verdict is, written to the ledger with its evidence, and only then returned. A self-edit is judged
once per task: sending it again (a resumed teacher) returns its first verdict.
"""

from __future__ import annotations

import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.arc_grading import ArcGrader
from auditor.fewshot_config import FewShotAuditorConfig
from auditor.teacher_versions import record_teacher_version
from library.arc import load_solutions, load_tasks, task_content_id
from library.ledger import Ledger
from protocol.artifacts import TRAINED_FROM, TRAINED_ON_CONTEXT, ArtifactError, ArtifactStore, self_edit_sha256
from protocol.codec import FEWSHOT_AUDITOR_CHANNEL, ProtocolError
from protocol.dispatch import Dispatcher
from protocol.fewshot import ArcGrade, ArcTask
from protocol.fewshot_clients import FewShotStudentClient
from protocol.fewshot_messages import GradeInContext, InContextGraded, JudgeTask
from protocol.messages import AdapterRef, RecordTeacherVersion, Scores, TeacherVersionRecorded, Verdict, Verdicts
from protocol.signing import sign_verdict

log = logging.getLogger(__name__)
METRIC = "arc_exact"
"""Solved: every test input has an exactly matching attempt among its first two."""


class FewShotAuditor:
    """Holds the ARC answer grids; turns test-time candidates into signed, recorded verdicts."""

    def __init__(
        self, config: FewShotAuditorConfig, student: FewShotStudentClient, signing_key: Ed25519PrivateKey | None
    ) -> None:
        """Read the tasks and their answer grids, open the store (read-only) and the ledger (its one writer)."""
        self.config, self.student, self.signing_key = config, student, signing_key
        self.tasks = {t.task_id: t for t in load_tasks(config.data, config.limit)}
        solutions = load_solutions(config.data, config.solutions)
        self.grader = ArcGrader({task_id: solutions[task_id] for task_id in self.tasks})
        self.store = ArtifactStore(config.store, writer=False)
        self.ledger = Ledger(config.ledger)
        self._judged = {  # (task id, self-edit sha256) -> the first verdict, as recorded
            (e["record"]["context_id"], e["record"]["verdict"]["self_edit_sha256"]): e
            for e in self.ledger.entries()
            if e["kind"] == "verdict" and e["record"].get("verdict", {}).get("metric") == METRIC
        }
        self._in_context: dict[str, ArcGrade] = {}
        self.handle = Dispatcher(
            FEWSHOT_AUDITOR_CHANNEL,
            {JudgeTask: self.judge, GradeInContext: self.grade_in_context, RecordTeacherVersion: self.record_version},
        )
        """Serves one request of the channel (the handler the ZeroMQ server and in-process links call)."""

    def close(self) -> None:
        """Release the ledger (its writer lock)."""
        self.ledger.close()

    def record_version(self, request: RecordTeacherVersion) -> TeacherVersionRecorded:
        """Check the version's claimed rewards against this ledger's verdicts, then record it."""
        return record_teacher_version(self.ledger, request)

    def grade_in_context(self, request: GradeInContext) -> InContextGraded:
        """The unadapted student's grade on the task (asked once per task, then remembered)."""
        return InContextGraded(grade=self._base_grade(self._task(request.task_id)))

    def judge(self, request: JudgeTask) -> Verdicts:
        """The verdict on the request's candidate, recorded in the ledger before it is returned."""
        task, adapter = self._task(request.task_id), request.candidate.adapter
        if adapter is None:
            why = f"the candidate was not trained ({request.candidate.skipped}): there is nothing to judge"
            raise ProtocolError("validation", why, "candidate.adapter")
        key = (task.task_id, self_edit_sha256(request.self_edit))
        earlier = self._judged.get(key)
        if earlier is None:
            problem, evidence = self._candidate_problem(task, request, adapter), {}
            if problem is None:
                problem, evidence = self._evidence(task, adapter.adapter_id)
            earlier = self._conclude(request, evidence, problem)
            self._judged[key] = earlier
        verdict = Verdict.model_validate(earlier["record"]["verdict"])
        verdict = verdict.model_copy(update={"ledger_entry": earlier["hash"]})
        log.info("%s %s: %s", "SOLVED" if verdict.accepted else "unsolved", task.task_id, verdict.reason)
        return Verdicts(verdicts=[verdict])

    # ----------------------------------------------------------------- evidence

    def _task(self, task_id: str) -> ArcTask:
        task = self.tasks.get(task_id)
        if task is None:
            raise ProtocolError("validation", f"no answer grids held for task {task_id}", "task_id")
        return task

    def _candidate_problem(self, task: ArcTask, request: JudgeTask, adapter: AdapterRef) -> str | None:
        """Why the adapter may not be judged as this task's candidate from this self-edit, or None."""
        candidate = request.candidate
        if (candidate.task_id, candidate.self_edit_id) != (task.task_id, request.self_edit.self_edit_id):
            return "the candidate names another task or self-edit than the request"
        if adapter.base_model != self.config.model:
            return f"adapter is for base model {adapter.base_model}, not {self.config.model}"
        try:
            provenance = self.store.provenance(adapter.adapter_id)
        except ArtifactError as exc:
            return str(exc)
        if self_edit_sha256(request.self_edit) not in provenance.get(TRAINED_FROM, []):
            return f"adapter {adapter.adapter_id[:12]} was not trained on the self-edit it is judged with"
        if provenance.get(TRAINED_ON_CONTEXT) != task_content_id(task):
            return f"adapter {adapter.adapter_id[:12]} was not trained on task {task.task_id} as the auditor holds it"
        return None

    def _evidence(self, task: ArcTask, adapter_id: str) -> tuple[str | None, dict[str, Any]]:
        """The student's answers with the adapter, graded, beside the in-context grade (or why not)."""
        prediction = self.student.answer_task(task, adapter_id, self.config.student_timeout_s).prediction
        if (prediction.task_id, prediction.adapter_id) != (task.task_id, adapter_id):
            return "the student answered for another task or adapter than asked", {}
        return None, {
            "grade": self.grader.grade(prediction),
            "in_context": self._base_grade(task),
            "prediction": prediction.model_dump(mode="json"),
        }

    def _base_grade(self, task: ArcTask) -> ArcGrade:
        if task.task_id not in self._in_context:
            prediction = self.student.answer_task(task, None, self.config.student_timeout_s).prediction
            self._in_context[task.task_id] = self.grader.grade(prediction)
        return self._in_context[task.task_id]

    # ----------------------------------------------------------------- the verdict

    def _conclude(self, request: JudgeTask, evidence: dict[str, Any], problem: str | None) -> dict[str, Any]:
        """Build, sign and record the verdict; returns its ledger entry (``hash`` and ``record``)."""
        grade: ArcGrade | None = evidence.get("grade")
        solved = grade is not None and grade.solved
        if problem:
            reason = f"not evaluated: {problem}"
        elif solved:
            reason = "solved: every test input matched exactly"
        else:
            reason = f"not solved: {sum(grade.correct)}/{len(grade.correct)} test inputs matched"  # type: ignore[union-attr]
        adapter = request.candidate.adapter
        verdict = Verdict(
            context_id=request.task_id,
            self_edit_id=request.self_edit.self_edit_id,
            adapter_id=adapter.adapter_id if adapter else "",
            accepted=solved,
            metric=METRIC,
            reward=1.0 if solved else 0.0,
            base=_scores(evidence.get("in_context")),
            candidate=_scores(grade),
            retention_drop=0.0,
            reason=reason,
            self_edit_sha256=self_edit_sha256(request.self_edit),
            ledger_entry="",
        )
        if self.signing_key is not None:
            verdict = sign_verdict(verdict, self.signing_key)
        record = {
            "adapter_id": verdict.adapter_id,
            "context_id": request.task_id,
            "accepted": solved,
            "reason": reason,
            "student_model": self.config.model,
            "verdict": verdict.model_dump(mode="json"),
            "self_edit": request.self_edit.model_dump(mode="json"),
            "training": request.candidate.model_dump(mode="json", exclude={"adapter"}),
            **{k: v.model_dump(mode="json") if isinstance(v, ArcGrade) else v for k, v in evidence.items()},
        }
        return {"hash": self.ledger.append("verdict", record), "record": record}


def _scores(grade: ArcGrade | None) -> Scores:
    """A grade as verdict scores: the share of test inputs matched (F1 is that share too; no likelihood here)."""
    if grade is None:
        return Scores(exact_match=0.0, f1=0.0, loglik=0.0, n_questions=0)
    share = sum(grade.correct) / len(grade.correct) if grade.correct else 0.0
    return Scores(exact_match=share, f1=share, loglik=0.0, n_questions=len(grade.correct))
