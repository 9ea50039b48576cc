"""The forgetting matrix from synthetic records: cells, order, bad records, and its table and heatmap."""

from __future__ import annotations

import pytest

from apps.adapt_report import forgetting_records
from apps.forgetting import ForgettingRecord, forgetting_matrix, plot_matrix
from library.ledger import Ledger
from protocol.messages import Context


def test_matrix_table_and_heatmap(tmp_path):
    records = [
        ForgettingRecord(1, "regatta", 3, 4),
        ForgettingRecord(2, "regatta", 2, 4),
        ForgettingRecord(2, "marten", 4, 5),
        ForgettingRecord(3, "regatta", 1, 4),
        ForgettingRecord(3, "marten", 5, 5),
    ]
    matrix = forgetting_matrix(records)
    assert matrix.passages == ["regatta", "marten"] and matrix.updates == [1, 2, 3]
    assert matrix.accuracy == [[0.75, 0.5, 0.25], [None, 0.8, 1.0]]
    assert matrix.markdown().splitlines()[2:] == ["| regatta | 0.75 | 0.50 | 0.25 |", "| marten |  | 0.80 | 1.00 |"]
    png = plot_matrix(matrix, tmp_path / "forgetting.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="measured twice"):
        forgetting_matrix([*records, ForgettingRecord(1, "regatta", 0, 4)])
    with pytest.raises(ValueError, match="5 right of 4"):
        forgetting_matrix([ForgettingRecord(1, "regatta", 5, 4)])


def _qa(base: str, cand: str, gold: str = "Quorne") -> dict:
    row = {"question": "Q?", "gold": [gold], "base_answer": base, "candidate_answer": cand}
    return row | {"base_loglik": -3.0, "candidate_loglik": -2.0}


def test_records_from_the_ledger_follow_the_promoted_stack(tmp_path):
    """Update j is the j-th promoted adapter's accepting verdict: its own acceptance set before and after, and
    each earlier passage's replayed counts after it; a verdict for an adapter not promoted adds nothing."""
    ledger = Ledger(tmp_path / "ledger.jsonl")
    first = {
        "adapter_id": "a1",
        "context_id": "c1",
        "accepted": True,
        "sets": {"reward": 1, "acceptance": 2},
        "per_question": [_qa("x", "Quorne"), _qa("x", "Quorne"), _qa("no", "it was Quorne")],
        "earlier": [],
    }
    second = {
        "adapter_id": "a2",
        "context_id": "c2",
        "accepted": True,
        "sets": {"reward": 1, "acceptance": 1},
        "per_question": [_qa("x", "x"), _qa("no", "slate", gold="slate")],
        "earlier": [{"context_id": "c1", "questions": 2, "before_right": 2, "candidate_right": 1}],
    }
    unpromoted = {**second, "adapter_id": "a3", "context_id": "c3"}
    for record in (first, second, unpromoted):
        ledger.append("verdict", record)
    ledger.close()
    contexts = [Context(context_id=c, title=t, text="x") for c, t in (("c1", "regatta"), ("c2", "quarry"))]
    records = forgetting_records(tmp_path, contexts, ["a1", "a2"])
    assert forgetting_matrix(records).accuracy == [[0.0, 1.0, 0.5], [None, 0.0, 1.0]]
