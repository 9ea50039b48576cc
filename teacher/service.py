"""The teacher role: one adaptation pass over its contexts, or ReST^EM rounds, driven against its peers.

Entry point: ``seal teacher --student tcp://127.0.0.1:5555 --auditor tcp://127.0.0.1:5556``. The
teacher is the only client-side role: it serves no channel, it drives the loop through its typed
links to the student and the auditor (ZeroMQ or in-process), and ends with a table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from rich.console import Console, RenderableType

from library.datasets import DEMO_DOCUMENTS, load_contexts
from protocol.clients import AuditorClient, StudentClient
from protocol.messages import Pong
from protocol.transport import PeerUnavailable
from teacher.backends import TeacherBackend
from teacher.config import TeacherConfig
from teacher.loop import run_pass
from teacher.promotion_wait import wait_for_promotions
from teacher.proposer import proposer_for
from teacher.report import outcomes_table, rounds_table
from teacher.restem import run_restem


class Teacher:
    """Proposes self-edits for its contexts and takes the auditor's verdicts as rewards."""

    def __init__(self, config: TeacherConfig, backend: TeacherBackend, student: StudentClient, auditor: AuditorClient):
        self.config, self.backend, self.student, self.auditor = config, backend, student, auditor
        self.contexts = load_contexts(config.data or DEMO_DOCUMENTS, limit=config.limit, per_title=config.per_title)

    def wait_for_peers(self) -> None:
        """Ping the student and the auditor until each answers; the error names the one that never did."""
        wait_for_peers({"student": self.student, "auditor": self.auditor}, self.config.ready_timeout_s)

    def run(self) -> RenderableType:
        """The configured work (ReST^EM rounds when ``restem.rounds`` > 0, else one pass); returns its table."""
        started = time.perf_counter()
        config = self.config
        if config.restem.rounds:
            summaries = run_restem(self.backend, self.contexts, self.student, self.auditor, config)
            return rounds_table(summaries, time.perf_counter() - started)
        propose_for = proposer_for(self.backend, config, config.version)
        timeouts = (config.train_timeout_s, config.judge_timeout_s)
        rehearsal = (config.rehearsal, config.rehearsal_seed)
        outcomes = run_pass(
            self.contexts,
            propose_for,
            self.student,
            self.auditor,
            config.run_dir,
            timeouts,
            rehearsal=rehearsal,
            before_context=self._promotion_gate(),
            propose_ahead=config.propose_ahead,
        )
        return outcomes_table(outcomes, time.perf_counter() - started)

    def _promotion_gate(self) -> Callable[[list[str]], None] | None:
        """With ``promotion_log``, a wait for the launcher's promotion of each finished context; else None."""
        log = self.config.promotion_log
        if log is None:
            return None
        return lambda done: wait_for_promotions(log, done, self.config.promotion_timeout_s)


def wait_for_peers(peers: dict[str, Pingable], deadline_s: float) -> None:
    """Ping each peer until it answers; PeerUnavailable names the one that did not within ``deadline_s``."""
    until = time.monotonic() + deadline_s
    transport_log = logging.getLogger("protocol.transport")
    level = transport_log.level
    transport_log.setLevel(logging.ERROR)  # a peer still loading its model is expected, not a warning per ping
    try:
        for name, peer in peers.items():
            while True:
                try:
                    peer.ping(timeout_s=2.0)
                    break
                except PeerUnavailable:
                    if time.monotonic() > until:
                        raise PeerUnavailable(
                            f"the {name} at {peer.endpoint} did not come up within {deadline_s:.0f}s"
                        ) from None
    finally:
        transport_log.setLevel(level)


class Pingable(Protocol):
    """A typed client, as far as waiting for its peer goes."""

    endpoint: str

    def ping(self, timeout_s: float = 2.0) -> Pong: ...


def run_teacher(config: TeacherConfig, backend: TeacherBackend, student: StudentClient, auditor: AuditorClient) -> None:
    """Wait for the peers, do the work, print the table."""
    console = Console()
    teacher = Teacher(config, backend, student, auditor)
    console.print(f"teacher {config.model} ({config.version}) ready; waiting for student and auditor")
    teacher.wait_for_peers()
    console.print(teacher.run())
