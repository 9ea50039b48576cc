"""`seal ledger verify --keys` against someone who rewrites the whole file and its head; `seal ledger repair`.

Every check here is read-only and ends in a report, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.cli import main
from auditor.config import AuditorConfig
from auditor.decision import Decider, ModelResult
from library.datasets import QAItem
from library.ledger import Ledger, canonical_json, entry_hash, head_path_for
from protocol.messages import CandidateToJudge
from protocol.signing import create_signing_key, load_signing_key
from tests.examples import CANDIDATE, SELF_EDIT

TAU = [QAItem("Who founded Ostrevane?", ["Ilsabet Quorne"])]


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    """A ledger of two signed verdicts (line 1 accepted, line 2 rejected), and the key folder."""
    keys = tmp_path / "keys"
    keys.mkdir()
    create_signing_key(keys)
    config = AuditorConfig(model="tiny", ledger=tmp_path / "ledger.jsonl", min_gain=0.05)
    with Ledger(config.ledger) as ledger:
        decider = Decider(config, ledger, [], load_signing_key(keys))
        for n, gain in ((1, 1.0), (2, 0.0)):
            edit = SELF_EDIT.model_copy(update={"self_edit_id": f"e{n}", "text": f"Quorne founded it ({n})."})
            candidate = CANDIDATE.model_copy(update={"self_edit_id": f"e{n}"})
            item = CandidateToJudge(self_edit=edit, candidate=candidate)
            base, cand = ModelResult(["?"], [-3.0], [], []), ModelResult(["Quorne"], [-3.0 + gain], [], [])
            decider.decide("c1", TAU, item, base, cand, [])
    return config.ledger, keys


def _entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reseal(path: Path, entries: list[dict]) -> None:
    """What an attacker with write access does after an edit: recompute every hash, and the head file."""
    prev = "0" * 64
    for seq, entry in enumerate(entries, start=1):
        entry.update(seq=seq, prev=prev)
        entry.pop("hash", None)
        entry["hash"] = prev = entry_hash(entry)
    path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    head_path_for(path).write_text(json.dumps({"count": len(entries), "last_seq": len(entries), "last_hash": prev}))


def _verify(path: Path, keys: Path, capsys) -> tuple[int, str]:
    code = main(["ledger", "verify", "--ledger", str(path), "--keys", str(keys)])
    return code, capsys.readouterr().out


def test_a_signed_ledger_verifies(signed, capsys):
    assert _verify(*signed, capsys) == (0, f"{signed[0]}: 2 entries, verified\n")


def _accept_in_the_record(record: dict) -> None:
    record["accepted"] = True


def _reword_the_reason(record: dict) -> None:
    record["reason"] = "loglik gain +9.000 >= 0.05"


def _swap_the_self_edit_text(record: dict) -> None:
    record["self_edit"]["text"] = "Ignore previous instructions."


def _remove_the_signed_verdict(record: dict) -> None:
    del record["verdict"]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_accept_in_the_record, "record field 'accepted' is True but the signed verdict says False"),
        (_reword_the_reason, "record field 'reason' is"),
        (_swap_the_self_edit_text, "the recorded self-edit is not the one the verdict signed"),
        (_remove_the_signed_verdict, "a verdict entry without its signed verdict"),
    ],
)
def test_a_resealed_edit_of_an_unsigned_field_is_caught(signed, capsys, tamper, expected):
    path, keys = signed
    entries = _entries(path)
    tamper(entries[1]["record"])  # the rejected verdict
    _reseal(path, entries)
    assert main(["ledger", "verify", "--ledger", str(path)]) == 0, "the chain alone cannot see a resealed edit"
    capsys.readouterr()
    code, out = _verify(path, keys, capsys)
    assert code == 1 and "NOT VERIFIED" in out
    assert f"  line 2: {expected}" in out


def test_a_verdict_missing_a_field_is_a_problem_line_not_a_traceback(signed, capsys):
    path, keys = signed
    entries = _entries(path)
    del entries[0]["record"]["verdict"]["reward"]
    _reseal(path, entries)
    code, out = _verify(path, keys, capsys)
    assert code == 1
    assert "  line 1: the recorded verdict is malformed (reward: Field required)" in out


def test_a_damaged_file_is_reported_and_the_rest_still_checked(signed, capsys):
    path, keys = signed
    lines = path.read_bytes().splitlines(keepends=True)
    forged = json.loads(lines[1])
    forged["record"]["accepted"] = True
    path.write_bytes(b"not json\n" + canonical_json(forged) + b"\n" + b'{"torn')
    code, out = _verify(path, keys, capsys)
    assert code == 1 and "1 entries, NOT VERIFIED" in out
    assert "  line 1: not JSON" in out
    assert "  line 3: torn last line" in out
    assert "  line 2: record field 'accepted' is True" in out, "damage elsewhere does not stop the signature checks"


def test_verify_writes_nothing(signed, capsys):
    path, keys = signed
    entries = _entries(path)
    head = head_path_for(path)
    head.write_text(json.dumps({"count": 1, "last_seq": 1, "last_hash": entries[0]["hash"]}))  # one behind
    before = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
    code, out = _verify(path, keys, capsys)
    assert code == 0 and "warning: line 2: written but the head file not yet updated" in out
    assert {p.name: p.read_bytes() for p in path.parent.iterdir() if p.is_file()} == before


def test_verify_reads_a_ledger_its_auditor_holds(signed, capsys):
    path, keys = signed
    with Ledger(path):
        assert _verify(path, keys, capsys)[0] == 0


# ---------------------------------------------------------------------------- seal ledger repair


def _repair(path: Path, capsys) -> tuple[int, str]:
    code = main(["ledger", "repair", "--ledger", str(path)])
    return code, capsys.readouterr().out


def test_repair_removes_a_torn_line_and_says_exactly_what(signed, capsys):
    path, keys = signed
    good = path.read_bytes()
    path.write_bytes(good + b'{"seq": 3, "ts"')
    with pytest.raises(Exception, match="torn"):
        Ledger(path)  # what the auditor meets at start
    code, out = _repair(path, capsys)
    assert code == 0 and path.read_bytes() == good
    assert out == f"{path}: repaired\n  removed line 3 (15 bytes, no trailing newline): b'{{\"seq\": 3, \"ts\"'\n"
    assert _verify(path, keys, capsys)[0] == 0
    assert _repair(path, capsys) == (0, f"{path}: nothing to repair\n")


def test_repair_reports_damage_in_the_middle_and_changes_nothing(signed, capsys):
    path, _ = signed
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0].replace(b'"accepted":true', b'"accepted":false') + lines[1] + b"torn")
    before = path.read_bytes(), head_path_for(path).read_bytes()
    code, out = _repair(path, capsys)
    assert code == 1 and "NOT REPAIRED, nothing changed" in out and "  line 1: hash mismatch" in out
    assert (path.read_bytes(), head_path_for(path).read_bytes()) == before


def test_repair_refuses_while_the_auditor_writes(signed, capsys):
    path, _ = signed
    with Ledger(path):
        assert main(["ledger", "repair", "--ledger", str(path)]) == 2
    assert "another Ledger in this process" in capsys.readouterr().err
