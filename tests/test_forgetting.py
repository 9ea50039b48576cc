"""The forgetting matrix from synthetic records: cells, order, bad records, and its table and heatmap."""

from __future__ import annotations

import pytest

from apps.forgetting import ForgettingRecord, forgetting_matrix, plot_matrix


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
