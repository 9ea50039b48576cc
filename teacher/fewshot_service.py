"""The few-shot teacher role: one pass over its ARC tasks, or ReST^EM rounds, against its peers.

Entry point: ``seal fewshot teacher --student tcp://127.0.0.1:5555 --auditor tcp://127.0.0.1:5556 --data FILE``.
It reads the tasks without their test outputs (:func:`library.arc.load_tasks`), samples ``k`` JSON
self-edits per task, has the student train on each and the auditor judge it
(:class:`teacher.fewshot_restem.FewShotDomain`), and ends with a table. With ``restem.rounds`` it runs
the rounds through the one driver (:func:`teacher.restem.run_rounds`). A rerun resumes from the run
folder (``results.jsonl`` for a pass, ``restem.jsonl`` and ``teacher/`` for rounds).
"""

from __future__ import annotations

import time

from rich.console import Console, RenderableType

from library.arc import load_tasks
from library.jsonl import JsonlLog
from teacher.backends import TeacherBackend
from teacher.fewshot_config import FewShotTeacherConfig
from teacher.fewshot_report import fewshot_table
from teacher.fewshot_restem import FewShotDomain, FewShotPeers, FewShotSampling
from teacher.m_step import MStepConfig
from teacher.report import rounds_table
from teacher.restem import run_rounds
from teacher.service import wait_for_peers
from teacher.versions import VersionBook


class FewShotTeacher:
    """Proposes few-shot self-edits for its tasks and takes the auditor's verdicts as rewards."""

    def __init__(self, config: FewShotTeacherConfig, backend: TeacherBackend, peers: FewShotPeers):
        self.config, self.backend, self.peers = config, backend, peers
        self.tasks = load_tasks(config.data, config.limit)

    def wait_for_peers(self) -> None:
        """Ping the student and the auditor until each answers."""
        wait_for_peers({"student": self.peers.student, "auditor": self.peers.auditor}, self.config.ready_timeout_s)

    def run(self) -> RenderableType:
        """The configured work (ReST^EM rounds when ``restem.rounds`` > 0, else one pass); returns its table."""
        started, config = time.perf_counter(), self.config
        sampling = FewShotSampling(config.k, config.sampling, config.max_attempts, config.structured)
        if config.restem.rounds:
            domain = self._domain("restem.jsonl", sampling)
            book, restem = VersionBook(config.run_dir), config.restem
            m_step = MStepConfig.of(config)
            summaries = run_rounds(
                domain, self.backend, book, self.peers.auditor, restem.rounds, restem.min_reward, m_step
            )
            return rounds_table(summaries, time.perf_counter() - started)
        records = self._domain("results.jsonl", sampling).sample_tasks(0, config.version)
        timeout = config.judge_timeout_s
        in_context = {t.task_id: self.peers.auditor.grade_in_context(t.task_id, timeout).grade for t in self.tasks}
        return fewshot_table(records, in_context, time.perf_counter() - started)

    def _domain(self, log_name: str, sampling: FewShotSampling) -> FewShotDomain:
        log_ = JsonlLog(self.config.run_dir / log_name)
        return FewShotDomain(self.backend, self.peers, log_, self.tasks, sampling)


def run_fewshot_teacher(config: FewShotTeacherConfig, backend: TeacherBackend, peers: FewShotPeers) -> None:
    """Wait for the peers, do the work, print the table."""
    console = Console()
    teacher = FewShotTeacher(config, backend, peers)
    console.print(f"few-shot teacher {config.model} ({config.version}) ready; waiting for student and auditor")
    teacher.wait_for_peers()
    console.print(teacher.run())
