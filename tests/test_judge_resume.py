"""An auditor killed mid-judgement, and the teacher re-sending the request: each candidate has one verdict."""

from __future__ import annotations

import pytest

from auditor.service import Auditor
from protocol.clients import student_in_process
from protocol.messages import JudgeCandidates, TrainConfig
from tests.test_auditor import _review, setup  # noqa: F401 (the fixture)


class Killed(BaseException):
    """The process dies here: nothing after this point runs."""


def _verdict_entries(auditor: Auditor, self_edit_id: str) -> list[str]:
    return [
        e["hash"]
        for e in auditor.ledger.entries()
        if e["kind"] == "verdict" and e["record"]["verdict"]["self_edit_id"] == self_edit_id
    ]


def test_a_resent_request_after_a_crash_gets_the_recorded_verdicts(setup, monkeypatch):  # noqa: F811
    student, auditor = setup
    settings = TrainConfig(rank=2, alpha=4, epochs=1)
    first, second = (_review(student, f"Ilsabet Quorne founded Ostrevane ({n}).", settings) for n in (1, 2))
    request = JudgeCandidates(context_id=first.self_edit.context_id, candidates=[first, second])
    decide = auditor.decider.decide

    def killed_after_the_first(*args, **kwargs):
        decide(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(auditor.decider, "decide", killed_after_the_first)
    with pytest.raises(Killed):
        auditor.judge(request)
    [orphan] = _verdict_entries(auditor, first.self_edit.self_edit_id)
    assert _verdict_entries(auditor, second.self_edit.self_edit_id) == []
    auditor.ledger.close()  # the process is gone, and with it its lock

    restarted = Auditor(auditor.config, student_in_process(student.handle, sender="auditor"))
    verdicts = restarted.judge(request).verdicts
    assert verdicts[0].ledger_entry == orphan, "the verdict already recorded is the one returned"
    assert _verdict_entries(restarted, first.self_edit.self_edit_id) == [orphan]
    assert _verdict_entries(restarted, second.self_edit.self_edit_id) == [verdicts[1].ledger_entry]
    count = restarted.ledger.count
    assert restarted.judge(request).verdicts == verdicts, "judging is idempotent"
    assert restarted.ledger.count == count
