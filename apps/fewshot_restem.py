"""Few-shot (ARC) ReST^EM for ``seal bench fewshot``: the domain that the one driver runs.

The E-step of round r samples ``n`` JSON self-edits per training task with teacher version v_r
(:func:`teacher.fewshot.propose_fewshot`), has the student train and answer with each
(:class:`student.fewshot.FewShotStudent`), and the auditor grade it (:class:`auditor.arc_auditor.ArcAuditor`,
which alone holds the answer grids and writes every verdict to the ledger). Per task and round, one
line of ``restem.jsonl`` holds the samples, so a rerun does not redo them. The driver keeps every
self-edit that solved its task, fine-tunes the teacher on them, has the auditor record the version,
and books it in ``teacher/versions.json``, as in the knowledge domain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from auditor.arc_auditor import ArcAuditor
from library.jsonl import JsonlLog
from protocol.fewshot import ArcTask, FewShotProposal
from protocol.messages import SamplingConfig
from student.fewshot import FewShotStudent
from teacher.backends import TeacherBackend
from teacher.fewshot import completion_text, propose_fewshot
from teacher.restem import Judgement, KeepPolicy, Sampled, TaskSamples
from teacher.versions import TeacherVersion

log = logging.getLogger(__name__)
ROUND_SEED_STRIDE = 1000
"""Round r samples with seed ``sampling.seed + 1000 * (r + 1)``: its own samples, the same on a rerun."""


@dataclass(frozen=True)
class FewShotSampling:
    """How the E-step samples: ``n`` self-edits per task, each slot resampled up to ``max_attempts`` times."""

    n: int
    sampling: SamplingConfig
    max_attempts: int


class FewShotDomain:
    """The few-shot E-step over the training tasks that fit the student; every solved self-edit is kept."""

    keep: KeepPolicy = "all"

    def __init__(
        self,
        teacher: TeacherBackend,
        student: FewShotStudent,
        auditor: ArcAuditor,
        log_: JsonlLog,
        tasks: list[ArcTask],
        sampling: FewShotSampling,
    ):
        self.teacher, self.student, self.auditor = teacher, student, auditor
        self.log, self.tasks, self.sampling = log_, tasks, sampling

    def e_step(self, round_index: int, version: TeacherVersion) -> list[TaskSamples]:
        """``n`` self-edits per task sampled by ``version``, tried and graded; resumed per task from the log."""
        done = []
        for task in self.tasks:
            record = self.log.find(round=round_index, task_id=task.task_id)
            if record is None:
                record = {
                    "round": round_index,
                    "task_id": task.task_id,
                    "samples": self._samples(task, round_index, version),
                }
                self.log.append(record)
            done.append(TaskSamples(task.task_id, [sampled(s) for s in record["samples"]]))
        return done

    def _samples(self, task: ArcTask, round_index: int, version: TeacherVersion) -> list[dict[str, Any]]:
        seed = self.sampling.sampling.seed + ROUND_SEED_STRIDE * (round_index + 1)
        sampling = self.sampling.sampling.model_copy(update={"seed": seed})
        n, attempts = self.sampling.n, self.sampling.max_attempts
        [proposals] = propose_fewshot(self.teacher, [task], n, sampling, version.version, attempts)
        return [{"proposal": p.model_dump()} | self._tried(task, p) for p in proposals]

    def _tried(self, task: ArcTask, proposal: FewShotProposal) -> dict[str, Any]:
        """The student's attempt with the proposal's self-edit, graded by the auditor into its ledger."""
        if proposal.self_edit is None:
            return {"solved": False, "failed_proposal": True, "seconds": 0.0}
        prediction = self.student.solve(task, proposal.self_edit)
        verdict = self.auditor.judge(proposal, completion_text(proposal.self_edit), prediction)
        log.info("ReST^EM %s %s: solved=%s", proposal.teacher_version, task.task_id, verdict.grade.solved)
        return {
            "solved": verdict.grade.solved,
            "skipped": prediction.skipped,
            "prediction": prediction.model_dump(),
            "grade": verdict.grade.model_dump(),
            "reward": verdict.reward,
            "verdict_entry": verdict.ledger_entry,
            "seconds": round(prediction.seconds, 1),
        }


def sampled(sample: dict[str, Any]) -> Sampled:
    """One line's sample in the driver's form: its training pair and its verdict (none for a failed proposal)."""
    proposal = FewShotProposal.model_validate(sample["proposal"])
    if proposal.self_edit is None or not sample.get("verdict_entry"):
        return Sampled(proposal.proposal_id, proposal.prompt, "", [])
    adapter_id = (sample.get("prediction") or {}).get("adapter_id") or ""
    verdict = Judgement(sample["solved"], False, sample["reward"], sample["verdict_entry"], adapter_id)
    return Sampled(proposal.proposal_id, proposal.prompt, completion_text(proposal.self_edit), [verdict])
