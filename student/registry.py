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
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from library.ledger import Ledger
from protocol.messages import Verdict
from protocol.signing import VerdictRefused, check_verdict


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
    """Promotions and rollbacks of the served adapter stack."""

    def __init__(self, root: Path, verify_key: Ed25519PublicKey | None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.verify_key = verify_key
        self.history = Ledger(root / "history.jsonl")
        try:
            self.state = self._load_state()
            self._reconcile()
        except BaseException:
            self.history.close()
            raise

    def close(self) -> None:
        """Release the history's writer lock (a restarted registry in this process needs it)."""
        self.history.close()

    def promote(self, adapter_id: str, verdict: Verdict) -> ServedState:
        """Put ``adapter_id`` on top of the served stack, if its verdict is a valid accepting one."""
        if self.verify_key is None:
            raise VerdictRefused("the student holds no auditor key (start it with --keys); nothing can be promoted")
        check_verdict(verdict, self.verify_key, adapter_id)
        if self.state.stack and self.state.stack[-1] == adapter_id:
            return self.state
        stack = [*self.state.stack, adapter_id]
        verdicts = {**self.state.verdicts, adapter_id: verdict.ledger_entry}
        return self._change("promote", stack, verdicts, verdict=verdict.model_dump(mode="json"))

    def rollback(self, to: str | None = None) -> ServedState:
        """Drop the top adapter, or every adapter above ``to`` (``"base"``: all of them)."""
        stack = self.state.stack
        if not stack:
            raise RegistryError("nothing to roll back: the base model is served")
        if to is None:
            keep = len(stack) - 1
        elif to == "base":
            keep = 0
        else:
            matches = [i for i, a in enumerate(stack) if a.startswith(to)]
            if len(matches) != 1:
                raise RegistryError(f"{to!r} names {len(matches)} adapters in the served stack, not one")
            keep = matches[0] + 1
        new_stack = stack[:keep]
        verdicts = {a: self.state.verdicts[a] for a in new_stack if a in self.state.verdicts}
        return self._change("rollback", new_stack, verdicts)

    def _change(self, action: str, stack: list[str], verdicts: dict[str, str], **extra: object) -> ServedState:
        new = ServedState(self.state.version + 1, stack, verdicts)
        self.history.append(action, {"version": new.version, "before": self.state.stack, "after": stack, **extra})
        try:
            self._write_state(new)  # a crash before this line leaves the previous state served
        except Exception as exc:
            self._abort(new.version, f"state.json was not written: {exc}")
            raise
        self.state = new
        return new

    def _abort(self, lost: int, why: str) -> None:
        """Record that version ``lost`` was never served; the state moves past its number, stack unchanged."""
        self.history.append("aborted", {"version": lost, "kept_version": self.state.version, "why": why})
        self.state = ServedState(lost, self.state.stack, self.state.verdicts)
        # If this fails too, state.json still holds the kept version and the next start finds the abort recorded.
        with contextlib.suppress(OSError):
            self._write_state(self.state)

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

    def _reconcile(self) -> None:
        """Record a change whose history entry was written but whose state was not (once: it may be recorded)."""
        entries = self.history.entries()
        changes = [e for e in entries if e["kind"] in ("promote", "rollback")]
        if not changes or changes[-1]["record"]["version"] <= self.state.version:
            return
        lost = changes[-1]["record"]["version"]
        if any(e["kind"] == "aborted" and e["record"]["version"] == lost for e in entries):
            self.state = ServedState(lost, self.state.stack, self.state.verdicts)
            self._write_state(self.state)
        else:
            self._abort(lost, "the student stopped between history.jsonl and state.json")
