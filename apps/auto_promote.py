"""``seal demo --auto-promote``: after the teacher's pass, the launcher promotes each context's best accepted adapter.

Only the CLI's key may promote (:mod:`protocol.authorisation`); the launcher made the run's key folder and
holds that key, so it promotes exactly as ``seal promote ADAPTER --ledger LEDGER --keys KEYS`` does, through
:func:`apps.governance_cli.promote_from_ledger`: the ledger's hash chain and the verdict's signature are
checked first, then the student checks the verdict again; each promotion is one ``promote`` entry of the
registry's history, and anything ``seal promote`` refuses (an unsigned, forged or rejecting verdict, a
ledger that does not verify) is refused here too, in one line, and the others go on.

Which adapters: per context, the accepted verdict with the highest reward (the earlier on a tie), in the
ledger order of those verdicts; an adapter already in the served stack (a resumed run) is skipped. A verdict
names the stack its candidate was trained on top of and judged against (``Verdict.on_top_of``), and the
registry promotes an adapter only onto that very stack: a candidate judged against the base model is not
promoted once another context's adapter is served (it is counted as judged against another stack; adapt its
passage again on top of the served one). So after one ``seal demo`` pass, whose candidates were all judged
against the same model, the first context's best adapter is promoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from apps.governance_cli import promote_from_ledger
from library.ledger import LedgerError, read_entries
from protocol.clients import StudentClient
from protocol.messages import ServedStack, Verdict
from protocol.security import SecurityError
from protocol.signing import VerdictRefused
from protocol.transport import TransportError

PROMOTE_TIMEOUT_S = 60.0  # as seal promote's default --timeout


@dataclass
class Promotion:
    """One adapter the launcher tried to promote; ``refused`` says why it was not (None: promoted)."""

    context_id: str
    adapter_id: str
    reward: float
    refused: str | None = None


@dataclass
class AutoPromotion:
    """What ``--auto-promote`` did: each attempt in order, the adapters skipped as already served, the stack after."""

    promotions: list[Promotion]
    already_served: list[str]
    stack: ServedStack
    judged_on_another_stack: list[str]

    def summary(self) -> str:
        """One line for the demo's log: what was promoted, and the served stack now."""
        done = [p for p in self.promotions if p.refused is None]
        promoted = ", ".join(f"{p.adapter_id[:12]} ({p.context_id[:12]}, reward {p.reward:+.2f})" for p in done)
        line = f"auto-promote: promoted {len(done)} adapter(s)" + (f": {promoted}" if promoted else "")
        if self.already_served:
            line += f"; {len(self.already_served)} already served"
        if self.judged_on_another_stack:
            line += f"; {len(self.judged_on_another_stack)} judged against another stack, not promoted"
        stack = "".join(f" + {a[:12]}" for a in self.stack.stack)
        return f"{line}; serving registry version {self.stack.version}: base{stack}"


def best_accepted(ledger: Path) -> list[Verdict]:
    """Per context, the accepted verdict with the highest reward (the earlier on a tie), in ledger order."""
    best: dict[str, tuple[int, Verdict]] = {}
    for position, entry in enumerate(read_entries(ledger)):
        if entry["kind"] != "verdict" or "verdict" not in entry["record"]:
            continue
        try:
            verdict = Verdict.model_validate(entry["record"]["verdict"])
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            raise LedgerError(f"{ledger}: entry {entry.get('seq')} holds no valid verdict ({why})") from None
        held = best.get(verdict.context_id)
        if verdict.accepted and (held is None or verdict.reward > held[1].reward):
            best[verdict.context_id] = (position, verdict)
    return [verdict for _, verdict in sorted(best.values(), key=lambda held: held[0])]


def promote_accepted(client: StudentClient, ledger: Path, keys: Path) -> AutoPromotion:
    """Promote each context's best accepted adapter through ``client`` (the CLI's), as ``seal promote`` would."""
    served = client.describe_served()
    promotions, skipped, stale = [], [], []
    for verdict in best_accepted(ledger):
        if verdict.adapter_id in served.stack:
            skipped.append(verdict.adapter_id)
            continue
        if verdict.on_top_of != served.stack:  # judged against another model than the one served now
            stale.append(verdict.adapter_id)
            continue
        promotion = Promotion(verdict.context_id, verdict.adapter_id, verdict.reward)
        try:
            served = promote_from_ledger(client, ledger, verdict.adapter_id, keys)
        except (LedgerError, SecurityError, VerdictRefused, TransportError) as exc:  # what seal promote reports
            promotion.refused = str(exc)
        promotions.append(promotion)
    return AutoPromotion(promotions, skipped, served, stale)


def promote_after_pass(run_dir: Path, student_endpoint: str, console: Console) -> bool:
    """The launcher's step: promote with the run's CLI key and print what was promoted; False if one was refused."""
    from apps.roles import student_client

    keys = run_dir / "keys"
    client = student_client(student_endpoint, "cli", PROMOTE_TIMEOUT_S, keys)
    try:
        result = promote_accepted(client, run_dir / "ledger.jsonl", keys)
    finally:
        client.close()
    for promotion in result.promotions:
        if promotion.refused is not None:
            where = f"{promotion.adapter_id[:12]} ({promotion.context_id[:12]})"
            console.print(f"[red]auto-promote refused[/] {escape(where)}: {escape(promotion.refused)}")
    console.print(escape(result.summary()))
    return all(p.refused is None for p in result.promotions)
