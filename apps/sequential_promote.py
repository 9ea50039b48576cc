"""``seal adapt --promote accepted``: each passage's best accepted adapter promoted before the next is adapted.

Continual adaptation trains each candidate on top of the served stack and judges it against that stack, so
an accepted update means something for the next passage only once it is served. Only the CLI's key may
promote (:mod:`protocol.authorisation`); the teacher cannot, and the auditor must not judge what it serves.
So the launcher, which made the run's key folder and holds the CLI key, acts between passages: while the
teacher runs, it watches ``results.jsonl`` (the teacher's finished passages, in order) and, for each new one,
promotes that passage's best accepted adapter exactly as ``seal promote`` does
(:func:`apps.governance_cli.promote_from_ledger`: the ledger's chain and the verdict's signature checked, then
the student checks the verdict again), then appends one line to ``promotions.jsonl``. The teacher, started
with ``--promotion-log`` naming that file (:mod:`teacher.promotion_wait`), waits for the line of every
finished passage before it asks for the served stack and trains the next candidate.

A passage without an accepted verdict gets a line too (nothing promoted), so the teacher goes on. A rerun
finds the passages already logged and never steps them again, and an adapter already served (a step cut off
between the promotion and its line) is logged as such, not promoted twice; a passage finished but not yet
logged when a run was cut off is stepped first, before the teacher adapts the next one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from apps.auto_promote import PROMOTE_TIMEOUT_S, best_accepted
from apps.governance_cli import promote_from_ledger
from apps.processes import ProcessGroup
from library.jsonl import append_jsonl, read_jsonl
from library.ledger import LedgerError
from protocol.clients import StudentClient
from protocol.messages import Verdict
from protocol.security import SecurityError
from protocol.signing import VerdictRefused
from protocol.transport import TransportError
from teacher.loop import load_outcomes
from teacher.service import wait_for_peers

PROMOTIONS_FILE = "promotions.jsonl"


@dataclass(frozen=True)
class PromotionStep:
    """The launcher's step after one passage: what it promoted (``adapter_id``), or why nothing.

    ``outcome``: "promoted", "already served", "nothing accepted" or "refused" (``refused`` then says why).
    ``stack``: the served stack after the step, bottom first.
    """

    context_id: str
    adapter_id: str | None
    outcome: str
    stack: list[str]
    refused: str | None = None

    def line(self) -> str:
        """One line for the terminal."""
        what = f"{self.outcome} {self.adapter_id[:12]}" if self.adapter_id else self.outcome
        why = f": {self.refused}" if self.refused else ""
        stack = "".join(f" + {a[:12]}" for a in self.stack)
        return f"promote after passage {self.context_id[:12]}: {what}{why}; serving base{stack}"


def promote_pending(client: StudentClient, run_dir: Path, keys: Path) -> list[PromotionStep]:
    """One step per passage in ``results.jsonl`` that ``promotions.jsonl`` does not name yet, in order."""
    log = run_dir / PROMOTIONS_FILE
    logged = {record["context_id"] for record in read_jsonl(log)}
    pending = [c for c in load_outcomes(run_dir / "results.jsonl") if c not in logged]
    if not pending:
        return []
    ledger = run_dir / "ledger.jsonl"
    best = {v.context_id: v for v in best_accepted(ledger)}
    steps = []
    for context_id in pending:
        step = _step(client, ledger, keys, context_id, best.get(context_id))
        append_jsonl(log, asdict(step))
        steps.append(step)
    return steps


def promoted_stack(run_dir: Path) -> list[str]:
    """The adapters this run's steps put (or found) in the served stack, in order, from ``promotions.jsonl``."""
    served = ("promoted", "already served")
    return [r["adapter_id"] for r in read_jsonl(run_dir / PROMOTIONS_FILE) if r["outcome"] in served]


def promote_while_teaching(
    group: ProcessGroup, run_dir: Path, student_endpoint: str, console: Console, ready_timeout_s: float
) -> tuple[int, bool]:
    """Step each passage the teacher finishes until it exits: (its exit code, False if a promotion was refused)."""
    from apps.roles import student_client

    keys = run_dir / "keys"
    client = student_client(student_endpoint, "cli", PROMOTE_TIMEOUT_S, keys)
    ok = True
    try:
        wait_for_peers({"student": client}, ready_timeout_s)
        while True:
            code = group.poll("teacher")  # read before the step, so the last passage is stepped after the exit
            for step in promote_pending(client, run_dir, keys):
                ok = ok and step.refused is None
                console.print(("[red]" if step.refused else "") + escape(step.line()))
            if code is not None:
                return code, ok
            time.sleep(0.5)
    finally:
        client.close()


def _step(client: StudentClient, ledger: Path, keys: Path, context_id: str, verdict: Verdict | None) -> PromotionStep:
    served = client.describe_served().stack
    if verdict is None:
        return PromotionStep(context_id, None, "nothing accepted", served)
    if verdict.adapter_id in served:
        return PromotionStep(context_id, verdict.adapter_id, "already served", served)
    try:
        stack = promote_from_ledger(client, ledger, verdict.adapter_id, keys).stack
    except (LedgerError, SecurityError, VerdictRefused, TransportError) as exc:  # what seal promote reports
        return PromotionStep(context_id, verdict.adapter_id, "refused", served, str(exc))
    return PromotionStep(context_id, verdict.adapter_id, "promoted", stack)
