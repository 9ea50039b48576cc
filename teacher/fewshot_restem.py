"""Few-shot (ARC) passes and ReST^EM for the teacher: the domain that the one driver runs, over typed clients.

The E-step of round r samples ``n`` JSON self-edits per task with teacher version v_r
(:func:`teacher.fewshot.propose_fewshot`); each valid one goes to the student as a
:class:`~protocol.fewshot_messages.TrainTask` (the task without its test outputs), and the trained
candidate to the auditor, which has the student answer with it, grades it against the answer grids it
alone holds, and returns a signed verdict recorded in its ledger. Per task and round, one line of the
log holds the samples, so a rerun does not redo them. The driver (:func:`teacher.restem.run_rounds`)
keeps every self-edit that solved its task, fine-tunes the teacher on them, has the auditor record the
version, and books it in ``teacher/versions.json``, as in the knowledge domain. One adaptation pass
(``seal demo --domain fewshot``) is the same E-step with the served version, logged on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from library.jsonl import JsonlLog
from protocol.fewshot import ArcTask, FewShotProposal
from protocol.fewshot_clients import FewShotAuditorClient, FewShotStudentClient
from protocol.messages import SamplingConfig
from teacher.backends import TeacherBackend
from teacher.fewshot import as_self_edit, completion_text, propose_fewshot
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
    structured: bool = True  # the backend's structured-output mode for the JSON, where it has one


@dataclass(frozen=True)
class FewShotPeers:
    """The few-shot student and auditor, and how long to wait for each."""

    student: FewShotStudentClient
    auditor: FewShotAuditorClient
    train_timeout_s: float | None = None
    judge_timeout_s: float | None = None


class FewShotDomain:
    """The few-shot E-step over the given tasks; every self-edit that solved its task is kept."""

    keep: KeepPolicy = "all"

    def __init__(
        self,
        teacher: TeacherBackend,
        peers: FewShotPeers,
        log_: JsonlLog,
        tasks: list[ArcTask],
        sampling: FewShotSampling,
    ):
        self.teacher, self.peers = teacher, peers
        self.log, self.tasks, self.sampling = log_, tasks, sampling

    def e_step(self, round_index: int, version: TeacherVersion) -> list[TaskSamples]:
        """``n`` self-edits per task sampled by ``version``, tried and judged; resumed per task from the log."""
        records = self.sample_tasks(round_index, version.version)
        return [TaskSamples(r["task_id"], [sampled(s) for s in r["samples"]]) for r in records]

    def sample_tasks(self, round_index: int, version: str) -> list[dict[str, Any]]:
        """Each task's log line for the round (``round``, ``task_id``, ``samples``), made where it is missing."""
        done = []
        for task in self.tasks:
            record = self.log.find(round=round_index, task_id=task.task_id)
            if record is None:
                samples = self._samples(task, round_index, version)
                record = {"round": round_index, "task_id": task.task_id, "samples": samples}
                self.log.append(record)
            done.append(record)
        return done

    def _samples(self, task: ArcTask, round_index: int, version: str) -> list[dict[str, Any]]:
        seed = self.sampling.sampling.seed + ROUND_SEED_STRIDE * (round_index + 1)
        sampling = self.sampling.sampling.model_copy(update={"seed": seed})
        n, attempts, structured = self.sampling.n, self.sampling.max_attempts, self.sampling.structured
        [proposals] = propose_fewshot(self.teacher, [task], n, sampling, version, attempts, structured)
        return [{"proposal": p.model_dump()} | self.try_proposal(self.peers, task, p) for p in proposals]

    @staticmethod
    def try_proposal(peers: FewShotPeers, task: ArcTask, proposal: FewShotProposal) -> dict[str, Any]:
        """The student's test-time training on the proposal's self-edit, and the auditor's verdict on it."""
        if proposal.self_edit is None:
            return {"solved": False, "failed_proposal": True, "seconds": 0.0}
        edit = as_self_edit(proposal)
        candidate = peers.student.train_task(task, edit, peers.train_timeout_s).candidate
        if candidate.adapter is None:
            return {"solved": False, "skipped": candidate.skipped, "seconds": 0.0}
        [verdict] = peers.auditor.judge_task(task.task_id, edit, candidate, peers.judge_timeout_s).verdicts
        log.info("%s %s: %s", proposal.teacher_version, task.task_id, verdict.reason)
        return {
            "solved": verdict.accepted,
            "candidate": candidate.model_dump(mode="json"),
            "verdict": verdict.model_dump(mode="json"),
            "reward": verdict.reward,
            "verdict_entry": verdict.ledger_entry,
            "seconds": round(candidate.seconds, 1),
        }


def sampled(sample: dict[str, Any]) -> Sampled:
    """One line's sample in the driver's form: its training pair and its verdict (none for a failed proposal)."""
    proposal = FewShotProposal.model_validate(sample["proposal"])
    if proposal.self_edit is None or not sample.get("verdict_entry"):
        return Sampled(proposal.proposal_id, proposal.prompt, "", [])
    adapter_id = sample["verdict"]["adapter_id"]
    verdict = Judgement(sample["solved"], False, sample["reward"], sample["verdict_entry"], adapter_id)
    return Sampled(proposal.proposal_id, proposal.prompt, completion_text(proposal.self_edit), [verdict])
