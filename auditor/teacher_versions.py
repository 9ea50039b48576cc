"""Recording teacher versions: the auditor checks each claimed reward against its own verdicts first.

A teacher version (a LoRA from ReST^EM's M-step, or an API teacher's exemplar
bank) is only as trustworthy as the rewards that chose its training data, so
every example must cite verdicts this auditor signed into its ledger, for that
very self-edit, whose mean reward is the one claimed. A version is recorded
once: asking again with the same artifact and data returns the first entry.
"""

from __future__ import annotations

import math
from typing import Any

from protocol.codec import ProtocolError
from protocol.messages import RecordTeacherVersion, TeacherVersionRecorded, TrainingExample
from seal.ledger import Ledger

REWARD_TOLERANCE = 1e-6


def record_teacher_version(ledger: Ledger, request: RecordTeacherVersion) -> TeacherVersionRecorded:
    """Check the request's examples against the ledger's verdicts, then append a ``teacher_version`` entry."""
    entries = ledger.entries()
    for earlier in entries:
        record = earlier["record"]
        if earlier["kind"] == "teacher_version" and (record["artifact_sha256"], record["data_sha256"]) == (
            request.artifact_sha256,
            request.data_sha256,
        ):
            return TeacherVersionRecorded(ledger_entry=earlier["hash"])
    verdicts = {e["hash"]: e["record"] for e in entries if e["kind"] == "verdict"}
    for index, example in enumerate(request.examples):
        problem = _example_problem(example, verdicts)
        if problem:
            raise ProtocolError("refused", f"examples.{index}: {problem}", f"examples.{index}")
    entry = ledger.append("teacher_version", request.model_dump(mode="json", exclude={"type"}))
    return TeacherVersionRecorded(ledger_entry=entry)


def _example_problem(example: TrainingExample, verdicts: dict[str, dict[str, Any]]) -> str | None:
    rewards = []
    for entry in example.verdict_entries:
        record = verdicts.get(entry)
        if record is None:
            return f"verdict {entry[:12]} is not in this auditor's ledger"
        verdict = record["verdict"]
        if verdict["self_edit_id"] != example.self_edit_id or verdict["context_id"] != example.context_id:
            return f"verdict {entry[:12]} is about another self-edit"
        if verdict["vetoes"]:
            return f"verdict {entry[:12]} carries a veto: a vetoed self-edit cannot teach the teacher"
        rewards.append(verdict["reward"])
    mean = sum(rewards) / len(rewards)
    if not math.isclose(mean, example.reward, rel_tol=0, abs_tol=REWARD_TOLERANCE):
        return f"claimed reward {example.reward:.6f} but the verdicts give {mean:.6f}"
    return None
