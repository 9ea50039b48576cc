"""The auditor's hash-chained ledger: appends, reopening, tamper detection, crash repair, full disk."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from library import ledger as ledger_mod
from library.ledger import (
    GENESIS,
    Ledger,
    LedgerError,
    canonical_json,
    entry_hash,
    head_path_for,
    lock_path_for,
    read_entries,
    repair_ledger,
    verify_ledger,
)

N = 5


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A ledger of N verdict entries, closed."""
    p = tmp_path / "runs" / "ledger.jsonl"
    led = Ledger(p)
    for i in range(1, N + 1):
        led.append("verdict", {"adapter_id": f"{i:064x}", "accepted": i % 2 == 0, "reward": i / 10})
    led.close()
    return p


def lines_of(p: Path) -> list[bytes]:
    return p.read_bytes().splitlines(keepends=True)


def write_lines(p: Path, lines: list[bytes]) -> None:
    p.write_bytes(b"".join(lines))


def problem_lines(report) -> set[int]:
    """The line numbers the report's problems name."""
    return {int(p.split(":")[0].removeprefix("line ")) for p in report.problems}


# ---------------------------------------------------------------------------- normal use


def test_append_reopen_verify(path: Path) -> None:
    report = verify_ledger(path)
    assert report.ok, report.problems
    assert (report.entries, report.warnings) == (N, [])

    led = Ledger(path)
    assert led.count == N
    entries = led.entries()
    assert [e["seq"] for e in entries] == list(range(1, N + 1))
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert led.last_hash == entries[-1]["hash"]

    h = led.append("note", {"text": "ünïcode stays readable", "nested": {"xs": [1, 2.5, None, True]}})
    assert h == led.last_hash == entry_hash(led.entries()[-1])
    assert "ünïcode".encode() in path.read_bytes()  # ensure_ascii=False
    head = json.loads(head_path_for(path).read_text())
    assert head == {"count": N + 1, "last_seq": N + 1, "last_hash": h}
    assert verify_ledger(path).ok


def test_entry_format(path: Path) -> None:
    raw = lines_of(path)[0].rstrip(b"\n")
    entry = json.loads(raw)
    assert set(entry) == {"seq", "ts", "kind", "record", "prev", "hash"}
    assert raw == canonical_json(entry)
    assert (
        entry["hash"]
        == entry_hash(entry)
        == hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()
    )


def test_find(path: Path) -> None:
    led = Ledger(path)
    [hit] = led.find(adapter_id=f"{3:064x}")
    assert hit["seq"] == 3 and hit["record"]["reward"] == 0.3
    assert [e["seq"] for e in led.find(accepted=True)] == [2, 4]
    assert led.find(accepted=True, adapter_id=f"{3:064x}") == []
    assert led.find(missing_key=1) == []


def test_empty_ledger(tmp_path: Path) -> None:
    p = tmp_path / "deep" / "dir" / "l.jsonl"
    led = Ledger(p)
    assert (led.count, led.last_hash, led.entries()) == (0, GENESIS, [])
    report = verify_ledger(p)
    assert report.ok and report.entries == 0
    led.close()  # one writer at a time
    assert Ledger(p).count == 0


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (["not", "a", "dict"], TypeError),
        ({"x": {1, 2}}, TypeError),
        ({"x": object()}, TypeError),
        ({1: "int key"}, TypeError),
        ({"x": [1.0, float("nan")]}, ValueError),
        ({"x": float("inf")}, ValueError),
        ({"x": "lone \ud800 surrogate"}, ValueError),
    ],
)
def test_non_json_records_are_rejected_before_writing(path: Path, record, error) -> None:
    before = path.read_bytes()
    led = Ledger(path)
    with pytest.raises(error, match="record"):
        led.append("verdict", record)
    assert path.read_bytes() == before
    assert led.count == N and verify_ledger(path).ok


def test_threads_append_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_mod.os, "fsync", lambda fd: None)  # durability is not under test; speed is
    led = Ledger(tmp_path / "l.jsonl")
    hashes: list[str] = []

    def work(t: int) -> None:
        for i in range(40):
            hashes.append(led.append("verdict", {"thread": t, "i": i}))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_ledger(led.path)
    assert report.ok, report.problems
    assert report.entries == led.count == 160 == len(set(hashes))


# ---------------------------------------------------------------------------- tampering


def test_changed_byte_is_a_hash_mismatch(path: Path) -> None:
    lines = lines_of(path)
    assert b'"reward":0.3' in lines[2]
    lines[2] = lines[2].replace(b'"reward":0.3', b'"reward":0.9')
    write_lines(path, lines)
    report = verify_ledger(path)
    assert not report.ok
    assert problem_lines(report) == {3}
    assert "hash mismatch" in report.problems[0]


def test_changed_last_entry_blocks_open(path: Path) -> None:
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b'"reward":0.5', b'"reward":5.0')
    write_lines(path, lines)
    with pytest.raises(LedgerError, match="hash check"):
        Ledger(path)


def test_deleted_middle_line(path: Path) -> None:
    lines = lines_of(path)
    del lines[2]
    write_lines(path, lines)
    report = verify_ledger(path)
    assert not report.ok
    assert 3 in problem_lines(report)
    assert any(p.startswith("line 3: seq is 4, expected 3") for p in report.problems)
    assert any(p.startswith("line 4: ") and "deleted" in p for p in report.problems)  # from the head file


def test_inserted_forged_line(path: Path) -> None:
    lines = lines_of(path)
    prev = json.loads(lines[1])
    forged = {"seq": 3, "ts": prev["ts"], "kind": "verdict", "record": {"ok": True}, "prev": prev["hash"]}
    forged["hash"] = entry_hash(forged)
    lines.insert(2, canonical_json(forged) + b"\n")
    write_lines(path, lines)
    report = verify_ledger(path)
    assert not report.ok
    # The forgery itself is consistent; the line after it breaks the chain.
    assert 4 in problem_lines(report)
    assert any(p.startswith("line 4: prev is not the hash of line 3") for p in report.problems)
    assert any(p.startswith("line 6: the file has 6 entries") and "inserted" in p for p in report.problems)


def test_swapped_lines(path: Path) -> None:
    lines = lines_of(path)
    lines[1], lines[2] = lines[2], lines[1]
    write_lines(path, lines)
    report = verify_ledger(path)
    assert not report.ok
    assert {2, 3} <= problem_lines(report)


def test_dropped_last_line_is_truncation(path: Path) -> None:
    write_lines(path, lines_of(path)[:-1])
    report = verify_ledger(path)
    assert not report.ok
    assert report.entries == N - 1
    assert any(p.startswith(f"line {N}: missing") and "truncated" in p for p in report.problems)
    with pytest.raises(LedgerError, match="verify_ledger"):
        Ledger(path)


def test_replaced_last_line(path: Path) -> None:
    lines = lines_of(path)
    last = json.loads(lines[-1])
    last["record"]["accepted"] = True
    last["hash"] = entry_hash(last)
    lines[-1] = canonical_json(last) + b"\n"
    write_lines(path, lines)
    report = verify_ledger(path)
    assert not report.ok
    assert problem_lines(report) == {N}
    assert "last entry replaced" in report.problems[0]


def test_not_json_line(path: Path) -> None:
    lines = lines_of(path)
    lines[1] = b"{garbage\n"
    write_lines(path, lines)
    report = verify_ledger(path)
    assert not report.ok
    assert problem_lines(report) == {2}
    assert "not JSON" in report.problems[0]


def test_missing_head_file(path: Path) -> None:
    head_path_for(path).unlink()
    report = verify_ledger(path)
    assert not report.ok and "head file" in report.problems[0]
    with pytest.raises(LedgerError, match="repair=True"):
        Ledger(path)
    assert Ledger(path, repair=True).count == N
    assert verify_ledger(path).ok


# ---------------------------------------------------------------------------- crashes


def tear(path: Path) -> bytes:
    """Simulate a crash mid-append: half of a new line, no newline."""
    good = path.read_bytes()
    partial = canonical_json({"seq": N + 1, "ts": "t", "kind": "verdict", "record": {"x": 1}})
    path.write_bytes(good + partial[: len(partial) // 2])
    return good


def test_torn_last_line_is_reported(path: Path) -> None:
    tear(path)
    report = verify_ledger(path)
    assert not report.ok
    assert report.entries == N
    assert problem_lines(report) == {N + 1}
    assert "torn" in report.problems[0]


def test_torn_last_line_blocks_open_until_repaired(path: Path) -> None:
    good = tear(path)
    with pytest.raises(LedgerError, match=rf"line {N + 1} is torn.*repair=True"):
        Ledger(path)
    led = Ledger(path, repair=True)
    assert path.read_bytes() == good
    assert led.count == N
    led.append("verdict", {"after": "repair"})
    report = verify_ledger(path)
    assert report.ok and report.entries == N + 1


def test_torn_line_with_newline_but_not_json_is_repaired(path: Path) -> None:
    good = path.read_bytes()
    path.write_bytes(good + b"\x00" * 40 + b"\n")  # what some filesystems leave after a crash
    with pytest.raises(LedgerError, match="torn"):
        Ledger(path)
    assert Ledger(path, repair=True).count == N
    assert path.read_bytes() == good


def test_head_one_entry_behind_is_brought_forward(path: Path) -> None:
    head = head_path_for(path)
    old_head = head.read_bytes()
    Ledger(path).append("verdict", {"late": True})
    head.write_bytes(old_head)  # as if the crash came between the line's fsync and the head's rename

    report = verify_ledger(path)
    assert report.ok and report.entries == N + 1
    assert report.warnings and report.warnings[0].startswith(f"line {N + 1}:")

    assert Ledger(path).count == N + 1
    assert json.loads(head.read_text())["count"] == N + 1
    assert verify_ledger(path).warnings == []


# ---------------------------------------------------------------------------- full disk


def test_disk_full_mid_write_leaves_ledger_unchanged(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = path.read_bytes()
    led = Ledger(path)
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_mod.os, "write", half_then_enospc)
    with pytest.raises(LedgerError, match="No space left"):
        led.append("verdict", {"adapter_id": "f" * 64})
    monkeypatch.undo()

    assert path.read_bytes() == before
    report = verify_ledger(path)
    assert report.ok and report.entries == N
    # The same Ledger object carries on once there is room again.
    led.append("verdict", {"adapter_id": "f" * 64})
    assert verify_ledger(path).entries == N + 1


def test_short_write_is_rolled_back(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = path.read_bytes()
    real_write = os.write
    monkeypatch.setattr(ledger_mod.os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(LedgerError, match="short write"):
        Ledger(path).append("verdict", {"x": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert verify_ledger(path).ok


def test_head_update_failure_rolls_back_the_line(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, head_before = path.read_bytes(), head_path_for(path).read_bytes()
    led = Ledger(path)

    def no_room(src, dst) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_mod.os, "replace", no_room)
    with pytest.raises(LedgerError, match="nothing recorded"):
        led.append("verdict", {"x": 1})
    monkeypatch.undo()
    assert (path.read_bytes(), head_path_for(path).read_bytes()) == (before, head_before)
    assert not list(path.parent.glob("*.tmp"))
    assert led.count == N and verify_ledger(path).ok


def test_outside_writer_is_detected(path: Path) -> None:
    led = Ledger(path)
    with path.open("ab") as f:
        f.write(b"{}\n")
    with pytest.raises(LedgerError, match="changed outside"):
        led.append("verdict", {"x": 1})


# ---------------------------------------------------------------------------- one writer per ledger

HOLD = """
import sys
from pathlib import Path
from library.ledger import Ledger
led = Ledger(Path(sys.argv[1]))
print("holding", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_a_second_writer_process_is_refused_at_start(path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        with pytest.raises(LedgerError, match=rf"{path.name}: another process \(pid {holder.pid}\) holds"):
            Ledger(path)
        assert read_entries(path)[-1]["seq"] == N, "readers need no lock"
        assert verify_ledger(path).ok
    finally:
        holder.communicate("", timeout=30)
    assert Ledger(path).count == N, "the kernel drops the lock with its holder"


def test_a_second_writer_in_this_process_is_refused_until_the_first_closes(path: Path) -> None:
    first = Ledger(path)
    with pytest.raises(LedgerError, match="another Ledger in this process"):
        Ledger(path)
    first.append("note", {"by": "first"})
    first.close()
    with pytest.raises(LedgerError, match="closed"):
        first.append("note", {"by": "first, after close"})
    with Ledger(path) as second:
        second.append("note", {"by": "second"})
    assert [e["record"]["by"] for e in read_entries(path)[N:]] == ["first", "second"]
    assert verify_ledger(path).ok and lock_path_for(path).name == "ledger.lock"


def test_a_refused_open_leaves_the_lock_free(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"torn")
    with pytest.raises(LedgerError, match="torn"):
        Ledger(path)
    assert Ledger(path, repair=True).count == N


def test_the_head_file_is_written_through_a_temporary_file_of_its_own(path: Path) -> None:
    # The old fixed name, left behind (or being written) by someone else, must not be reused.
    (path.parent / (head_path_for(path).name + ".tmp")).mkdir()
    with Ledger(path) as led:
        led.append("note", {"x": 1})
    assert verify_ledger(path).ok and read_entries(path)[-1]["record"] == {"x": 1}
    assert oct(head_path_for(path).stat().st_mode & 0o777) == "0o644"


# ---------------------------------------------------------------------------- repair


def test_repair_removes_a_torn_last_line_and_says_what(path: Path) -> None:
    good = path.read_bytes()
    path.write_bytes(good + b'{"hash": "cut off')
    report = repair_ledger(path)
    assert report.ok and path.read_bytes() == good
    [done] = report.done
    assert done.startswith(f"removed line {N + 1} (17 bytes, no trailing newline)") and "cut off" in done
    assert verify_ledger(path).ok
    assert repair_ledger(path).done == [], "a sound ledger is left alone"


def test_repair_brings_a_lagging_head_forward(path: Path) -> None:
    head = head_path_for(path)
    old_head = head.read_bytes()
    with Ledger(path) as led:
        led.append("verdict", {"late": True})
    head.write_bytes(old_head)  # the crash fell between the line's fsync and the head's replace
    path.write_bytes(path.read_bytes() + b"\x00" * 40 + b"\n")  # and a second append was torn
    report = repair_ledger(path)
    assert report.ok and len(report.done) == 2 and "forward to 6 entries" in report.done[1]
    report = verify_ledger(path)
    assert report.ok and report.warnings == [] and report.entries == N + 1


def test_repair_refuses_damage_in_the_middle_and_changes_nothing(path: Path) -> None:
    lines = lines_of(path)
    lines[1] = lines[1].replace(b'"reward":0.2', b'"reward":0.9')
    write_lines(path, [*lines, b"torn"])
    before, head_before = path.read_bytes(), head_path_for(path).read_bytes()
    report = repair_ledger(path)
    assert not report.ok and report.done == []
    assert any(p.startswith("line 2: hash mismatch") for p in report.problems)
    assert (path.read_bytes(), head_path_for(path).read_bytes()) == (before, head_before)


def test_repair_refuses_a_truncated_tail(path: Path) -> None:
    write_lines(path, lines_of(path)[:-1])
    report = repair_ledger(path)
    assert not report.ok and "tail truncated" in report.problems[0]


def test_repair_refuses_while_a_writer_holds_the_ledger(path: Path) -> None:
    with Ledger(path), pytest.raises(LedgerError, match="another Ledger"):
        repair_ledger(path)
