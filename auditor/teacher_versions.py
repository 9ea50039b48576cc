"""Recording teacher versions: the auditor checks each claimed reward against its own verdicts first.

A teacher version (a LoRA from ReST^EM's M-step, or an API teacher's exemplar
bank) is only as trustworthy as the rewards that chose its training data, so
every example must cite all the verdicts this auditor wrote into its ledger for
that very self-edit (accepted, unvetoed, mean reward as claimed and above 0), and
``data_sha256`` must be the hash of those self-edits' prompts and texts as the
verdicts recorded them. A version is recorded once: asking again with the same
artifact and data returns the first entry, while a version name already
recorded with other content is refused, so a name always means one artifact.
"""

from __future__ import annotations

import math
from typing import Any

from library.ledger import Ledger
from library.teaching import Judged, mean_reward, teaching_problem
from protocol.artifacts import pairs_sha256
from protocol.codec import ProtocolError
from protocol.messages import RecordTeacherVersion, TeacherVersionRecorded, VersionExample

REWARD_TOLERANCE = 1e-6


def record_teacher_version(ledger: Ledger, request: RecordTeacherVersion) -> TeacherVersionRecorded:
    """Check the request's examples against the ledger's verdicts, then append a ``teacher_version`` entry."""
    entries = ledger.entries()
    earlier = _earlier_entry(entries, request)
    if earlier is not None:
        return TeacherVersionRecorded(ledger_entry=earlier)
    verdicts = {e["hash"]: e["record"] for e in entries if e["kind"] == "verdict"}
    problem = _request_problem(request, verdicts)
    if problem:
        raise ProtocolError("refused", problem[1], problem[0])
    entry = ledger.append("teacher_version", request.model_dump(mode="json", exclude={"type"}))
    return TeacherVersionRecorded(ledger_entry=entry)


def _earlier_entry(entries: list[dict[str, Any]], request: RecordTeacherVersion) -> str | None:
    """The entry that already records this artifact and data, or None; a name taken by other content is refused."""
    versions = [e for e in entries if e["kind"] == "teacher_version"]
    content = (request.artifact_sha256, request.data_sha256)
    for earlier in versions:
        if (earlier["record"]["artifact_sha256"], earlier["record"]["data_sha256"]) == content:
            return earlier["hash"]
    clash = next((e for e in versions if e["record"]["version"] == request.version), None)
    if clash is not None:
        why = f"teacher version {request.version!r} is already recorded with other content (entry {clash['hash'][:12]})"
        raise ProtocolError("refused", why, "version")
    return None


def _request_problem(request: RecordTeacherVersion, verdicts: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """(field, why) for the first claim the ledger does not back, or None."""
    if not request.examples:
        return "examples", "a teacher version needs at least one rewarded example"
    edit_ids = [e.self_edit_id for e in request.examples]
    if len(set(edit_ids)) != len(edit_ids):
        return "examples", "a self-edit appears twice"
    pairs = []
    for index, example in enumerate(request.examples):
        problem = _example_problem(example, verdicts)
        if problem:
            return f"examples.{index}", f"examples.{index}: {problem}"
        edit = verdicts[example.verdict_entries[0]]["self_edit"]
        pairs.append((edit["prompt"], edit["text"]))
    if pairs_sha256(pairs) != request.data_sha256:
        return "data_sha256", "data_sha256 is not the hash of the rewarded self-edits the examples cite"
    return None


def _example_problem(example: VersionExample, verdicts: dict[str, dict[str, Any]]) -> str | None:
    cited = example.verdict_entries
    if len(set(cited)) != len(cited):
        return "a verdict is cited twice"
    missing = [entry for entry in cited if entry not in verdicts]
    if missing:
        return f"verdict {missing[0][:12]} is not in this auditor's ledger"
    own = {
        entry
        for entry, record in verdicts.items()
        if (record["verdict"]["self_edit_id"], record["verdict"]["context_id"])
        == (example.self_edit_id, example.context_id)
    }
    if not set(cited) <= own:
        return "a cited verdict is about another self-edit"
    if set(cited) != own:
        return f"cites {len(cited)} of the {len(own)} verdicts on this self-edit: all of them count"
    judged = [_judged(verdicts[entry]["verdict"]) for entry in cited]
    problem = teaching_problem(judged)
    if problem:
        return problem
    mean = mean_reward(judged)
    if not math.isclose(mean, example.reward, rel_tol=0, abs_tol=REWARD_TOLERANCE):
        return f"claimed reward {example.reward:.6f} but the verdicts give {mean:.6f}"
    return None


def _judged(verdict: dict[str, Any]) -> Judged:
    """A verdict as recorded in the ledger, in the teaching rule's form."""
    return Judged(accepted=verdict["accepted"], vetoed=bool(verdict["vetoes"]), reward=verdict["reward"])
