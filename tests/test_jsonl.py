"""Resumable JSON-lines files: a torn last line is dropped and reported, appends start cleanly after it."""

from __future__ import annotations

import json
import logging

import pytest

from library.jsonl import JsonlError, JsonlLog, append_jsonl, find_record, read_jsonl, write_jsonl

ROWS = [{"row": "a", "task_id": "t1", "solved": True}, {"row": "a", "task_id": "t2", "solved": False}]


@pytest.fixture
def torn(tmp_path):
    """Two records, then a third cut short mid-write."""
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + '{"row": "b", "task_')
    return path


def test_a_torn_last_line_is_dropped_and_reported(torn, caplog):
    with caplog.at_level(logging.WARNING, logger="library.jsonl"):
        assert read_jsonl(torn) == ROWS
    assert "dropped its last line" in caplog.text and str(torn) in caplog.text


def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(torn):
    torn.write_text(torn.read_text() + "\n" + json.dumps(ROWS[0]) + "\n")
    with pytest.raises(JsonlError, match=r"records\.jsonl: line 3 is not JSON"):
        read_jsonl(torn)


def test_an_append_after_a_torn_line_starts_on_a_line_of_its_own(torn, caplog):
    with caplog.at_level(logging.WARNING, logger="library.jsonl"):
        append_jsonl(torn, {"row": "b", "task_id": "t1"}, {"row": "b", "task_id": "t2"})
    assert "cut off a torn last line" in caplog.text
    assert read_jsonl(torn) == [*ROWS, {"row": "b", "task_id": "t1"}, {"row": "b", "task_id": "t2"}]
    assert torn.read_text().endswith("\n")


def test_a_last_record_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(ROWS[0]))
    append_jsonl(path, ROWS[1])
    assert read_jsonl(path) == ROWS


def test_a_log_finds_records_by_key_fields_and_survives_reopening(torn):
    log = JsonlLog(torn)
    assert log.find(row="a", task_id="t2") == ROWS[1]
    assert log.find(row="b", task_id="t1") is None and log.find(task_id="t9") is None
    log.append({"row": "b", "task_id": "t1", "solved": True})
    again = JsonlLog(torn)
    assert again.records == log.records and again.find(row="b")["solved"] is True
    assert find_record(again.records, solved=False) == ROWS[1]


def test_a_missing_file_has_no_records_and_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "new.jsonl"
    assert read_jsonl(path) == [] and JsonlLog(path).records == []
    write_jsonl(path, ROWS)
    write_jsonl(path, ROWS[:1])
    assert read_jsonl(path) == ROWS[:1] and not (tmp_path / "new.jsonl.tmp").exists()
