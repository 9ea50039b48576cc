"""Verdicts already in the ledger: a candidate is judged once, however often it is sent.

An auditor killed mid-judgement has recorded some verdicts of a request and
replied with none. The teacher, resumed, sends the request again; judging those
candidates afresh would write a second verdict on each, and the teacher-version
check (which counts every verdict on a self-edit) would then refuse the one the
teacher cites. So a candidate, named by its adapter id and the sha256 of its
self-edit, that this ledger already holds a verdict on gets that verdict back.
"""

from __future__ import annotations

from auditor.decision import self_edit_sha256
from library.ledger import Ledger
from protocol.messages import CandidateToJudge, Verdict


def recorded_verdicts(ledger: Ledger, candidates: list[CandidateToJudge]) -> dict[int, Verdict]:
    """The recorded verdict of each candidate (keyed by ``id()`` of the candidate) that has one."""
    wanted = {(c.candidate.adapter.adapter_id, self_edit_sha256(c.self_edit)): c for c in candidates}
    found: dict[int, Verdict] = {}
    for entry in ledger.entries():
        data = entry["record"].get("verdict") if entry["kind"] == "verdict" else None
        item = wanted.get((data.get("adapter_id"), data.get("self_edit_sha256"))) if isinstance(data, dict) else None
        if item is not None and id(item) not in found:  # the first verdict is the one a client was (or is) told
            found[id(item)] = Verdict.model_validate(data).model_copy(update={"ledger_entry": entry["hash"]})
    return found
