"""The served adapter stack: promotion only on a signed accepting verdict, rollback in one step.

State lives in two files under ``STORE/served/``: ``history.jsonl`` (a
hash-chained ledger of every change, written first) and ``state.json`` (the
stack being served, replaced atomically, written second). If the second write
fails, an ``aborted`` entry for that version follows at once, so history and
state agree; if a crash falls between the two writes, the next start finds a
history entry newer than the state, records it as aborted, and keeps serving
the previous state. Either way the lost version number is never reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from library.ledger import Ledger, LedgerError, read_entries
from protocol.messages import Verdict
from protocol.signing import VerdictRefused, check_verdict

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """A change to the served state that cannot be made."""


@dataclass
class ServedState:
    """What the student serves: the base model plus this stack of adapters (bottom first)."""

    version: int = 0
    stack: list[str] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)  # adapter id -> ledger entry of its verdict


def read_served_state(root: Path) -> ServedState:
    """The served state under ``root`` (``STORE/served``), read-only: for readers such as ``seal serve``.

    Takes no lock and writes nothing; ``state.json`` is replaced atomically, so a reader sees one whole state.
    """
    path = root / "state.json"
    return ServedState(**json.loads(path.read_text())) if path.exists() else ServedState()


class Registry:
    """Promotions and rollbacks of the served adapter stack.

    The history is written under its ledger's writer lock, taken for each change only: several registries
    (two students on one store, a restarted one, ``seal serve`` reading) may share a store, and each change
    starts from the state on disk, so none is lost and none is applied on a stale stack.
    """

    def __init__(self, root: Path, verify_key: Ed25519PublicKey | None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.verify_key = verify_key
        self.history_path = root / "history.jsonl"
        with self._writing():  # finish what a crash between the two writes left (see _reconcile)
            pass

    @property
    def state(self) -> ServedState:
        """The served state as it is on disk now."""
        return self._load_state()

    def history_entries(self) -> list[dict[str, object]]:
        """Every history entry, read without the writer lock."""
        return read_entries(self.history_path)

    def promote(self, adapter_id: str, verdict: Verdict) -> ServedState:
        """Put ``adapter_id`` on top of the served stack, if its verdict is a valid accepting one."""
        if self.verify_key is None:
            raise VerdictRefused("the student holds no auditor key (start it with --keys); nothing can be promoted")
        check_verdict(verdict, self.verify_key, adapter_id)
        with self._writing() as (history, state):
            if state.stack and state.stack[-1] == adapter_id:
                return state
            if verdict.on_top_of != state.stack:
                raise VerdictRefused(stale_stack_reason(verdict, state.stack))
            stack = [*state.stack, adapter_id]
            verdicts = {**state.verdicts, adapter_id: verdict.ledger_entry}
            return self._change(history, state, "promote", stack, verdicts, verdict=verdict.model_dump(mode="json"))

    def rollback(self, to: str | None = None) -> ServedState:
        """Drop the top adapter, or every adapter above ``to`` (``"base"``: all of them)."""
        with self._writing() as (history, state):
            keep = _kept_depth(state.stack, to)
            new_stack = state.stack[:keep]
            verdicts = {a: state.verdicts[a] for a in new_stack if a in state.verdicts}
            return self._change(history, state, "rollback", new_stack, verdicts)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[tuple[Ledger, ServedState]]:
        """The history's writer lock for one change, and the state it starts from (reconciled first)."""
        try:
            history = Ledger(self.history_path)
        except LedgerError as exc:  # another writer holds it (or the history is damaged): refuse, the stack unchanged
            log.warning("served stack not changed: %s", exc)
            raise RegistryError(
                "the served stack is being changed by another process, or its history is damaged "
                "(see the student's log); nothing was changed"
            ) from None
        try:
            yield history, self._reconcile(history, self._load_state())
        finally:
            history.close()

    def _change(
        self,
        history: Ledger,
        state: ServedState,
        action: str,
        stack: list[str],
        verdicts: dict[str, str],
        **extra: object,
    ) -> ServedState:
        new = ServedState(state.version + 1, stack, verdicts)
        history.append(action, {"version": new.version, "before": state.stack, "after": stack, **extra})
        try:
            self._write_state(new)  # a crash before this line leaves the previous state served
        except Exception as exc:
            self._abort(history, state, new.version, f"state.json was not written: {exc}")
            raise
        return new

    def _abort(self, history: Ledger, state: ServedState, lost: int, why: str) -> ServedState:
        """Record that version ``lost`` was never served; the state moves past its number, stack unchanged."""
        history.append("aborted", {"version": lost, "kept_version": state.version, "why": why})
        moved = ServedState(lost, state.stack, state.verdicts)
        # If this fails too, state.json still holds the kept version and the next change finds the abort recorded.
        with contextlib.suppress(OSError):
            self._write_state(moved)
        return moved

    def _load_state(self) -> ServedState:
        return read_served_state(self.root)

    def _write_state(self, state: ServedState) -> None:
        path = self.root / "state.json"
        tmp = path.with_suffix(".json.tmp")
        with tmp.open("w") as handle:
            json.dump(asdict(state), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def _reconcile(self, history: Ledger, state: ServedState) -> ServedState:
        """Record a change whose history entry was written but whose state was not (once: it may be recorded)."""
        entries = history.entries()
        changes = [e for e in entries if e["kind"] in ("promote", "rollback")]
        if not changes or changes[-1]["record"]["version"] <= state.version:
            return state
        lost = changes[-1]["record"]["version"]
        if any(e["kind"] == "aborted" and e["record"]["version"] == lost for e in entries):
            moved = ServedState(lost, state.stack, state.verdicts)
            self._write_state(moved)
            return moved
        return self._abort(history, state, lost, "the student stopped between history.jsonl and state.json")


def _kept_depth(stack: list[str], to: str | None) -> int:
    """How many adapters a rollback to ``to`` keeps (None: all but the top one; "base": none)."""
    if not stack:
        raise RegistryError("nothing to roll back: the base model is served")
    if to is None:
        return len(stack) - 1
    if to == "base":
        return 0
    matches = [i for i, a in enumerate(stack) if a.startswith(to)]
    if len(matches) != 1:
        raise RegistryError(f"{to!r} names {len(matches)} adapters in the served stack, not one")
    return matches[0] + 1


def stale_stack_reason(verdict: Verdict, served: list[str]) -> str:
    """Why an accepting verdict judged against another model than the one served cannot be promoted onto it."""
    judged = " + ".join(a[:12] for a in verdict.on_top_of) or "the base model"
    now = " + ".join(a[:12] for a in served) or "the base model"
    return (
        f"adapter {verdict.adapter_id[:12]} was trained and judged on top of {judged}, but {now} is served: "
        "adapt its passage again on top of the served stack"
    )
