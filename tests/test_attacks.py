"""Holding under attack (issue #15): teacher-version names, and `seal promote` against a doctored ledger.

The veto bypass (an adapter judged with another self-edit than it was trained on) is in test_auditor.py,
the deployment's key and volume split in test_compose.py.
"""

from __future__ import annotations

import json

import pytest

from apps.cli import main
from apps.processes import free_tcp_ports
from auditor.config import AuditorConfig
from auditor.decision import Decider, ModelResult
from auditor.teacher_versions import record_teacher_version
from library.ledger import Ledger, canonical_json, entry_hash, head_path_for
from protocol.codec import ProtocolError
from protocol.messages import ApplySelfEdits, CandidateToJudge, VersionExample
from protocol.signing import load_signing_key
from tests.test_governance_cli import TAU, world  # noqa: F401  (world is a fixture)
from tests.test_restem import _ledger_with_verdicts, _request
from tests.test_student import _job

# --------------------------------------------------------------------------- teacher versions


def test_a_teacher_version_name_is_recorded_with_one_content_only(tmp_path):
    ledger, entries = _ledger_with_verdicts(tmp_path)
    example = VersionExample(context_id="c1", self_edit_id="e1", reward=0.5, verdict_entries=entries[:2])
    first = record_teacher_version(ledger, _request([example]))
    assert record_teacher_version(ledger, _request([example])) == first, "the same version again stays idempotent"
    other = _request([example]).model_copy(update={"artifact_sha256": "ef" * 32})
    before = ledger.count
    with pytest.raises(ProtocolError, match="'v1' is already recorded with other content") as refused:
        record_teacher_version(ledger, other)
    assert refused.value.field == "version"
    assert ledger.count == before
    renamed = other.model_copy(update={"version": "v2"})
    assert record_teacher_version(ledger, renamed) != first


# --------------------------------------------------------------------------- seal promote


def _signed_verdict(world, ledger_path, text: str, gain: float) -> str:  # noqa: F811
    """Train an adapter on ``text`` and record the auditor's signed verdict on it; returns the adapter id."""
    _, keys, student, _ = world
    job = _job(self_edit=text)
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[job])).candidates[0]
    config = AuditorConfig(model=student.config.model, ledger=ledger_path, min_gain=0.05)
    decider = Decider(config, Ledger(ledger_path), [], load_signing_key(keys))
    base, cand = ModelResult(["?"], [-3.0], [], []), ModelResult(["Quorne"], [-3.0 + gain], [], [])
    decider.decide("c1", TAU, CandidateToJudge(self_edit=job.self_edit, candidate=candidate), base, cand, [])
    return candidate.adapter.adapter_id


def _promote(world, ledger_path, adapter: str, student: str | None = None) -> int:  # noqa: F811
    _, keys, _, endpoint = world
    args = ["promote", adapter[:12], "--ledger", str(ledger_path), "--keys", str(keys), "--timeout", "2"]
    return main([*args, "--student", student or endpoint])


def _served(world) -> list[str]:  # noqa: F811
    return world[2].served.describe().stack


def test_promote_b_never_promotes_the_adapter_of_another_verdict(world, tmp_path, capsys):  # noqa: F811
    """A record naming adapter B that holds the (genuine, signed) accepting verdict on A."""
    ledger_path = tmp_path / "ledger.jsonl"
    a = _signed_verdict(world, ledger_path, "Quorne founded it (A).", gain=1.0)
    b = _signed_verdict(world, ledger_path, "Quorne founded it (B).", gain=0.0)
    with Ledger(ledger_path) as ledger:
        verdict_on_a = ledger.entries()[0]["record"]["verdict"]
        ledger.append("verdict", {"adapter_id": b, "accepted": True, "verdict": verdict_on_a})
    before = _served(world)
    assert _promote(world, ledger_path, b) == 2
    assert f"names adapter {b[:12]} but holds the verdict on {a[:12]}" in capsys.readouterr().err
    assert _served(world) == before


def test_promote_refuses_a_ledger_whose_hash_chain_is_broken(world, tmp_path, capsys):  # noqa: F811
    ledger_path = tmp_path / "ledger.jsonl"
    adapter = _signed_verdict(world, ledger_path, "Quorne founded it (chain).", gain=1.0)
    text = ledger_path.read_text().replace("Quorne founded it (chain).", "Quorne founded it (edited).")
    ledger_path.write_text(text)  # the verdict and its signature are intact; the entry's hash is not
    before = _served(world)
    assert _promote(world, ledger_path, adapter) == 2
    err = capsys.readouterr().err
    assert "does not verify" in err and len(err.strip().splitlines()) == 1
    assert _served(world) == before


def test_promote_refuses_a_forged_verdict_before_sending_it(world, tmp_path, capsys):  # noqa: F811
    """A rejecting verdict flipped to accepting, the whole chain resealed: only the signature gives it away."""
    ledger_path = tmp_path / "ledger.jsonl"
    adapter = _signed_verdict(world, ledger_path, "Quorne founded it (forged).", gain=0.0)
    entries = [json.loads(line) for line in ledger_path.read_text().splitlines()]
    prev = "0" * 64
    for entry in entries:
        entry["record"]["verdict"]["accepted"] = entry["record"]["accepted"] = True
        entry["prev"] = prev
        entry.pop("hash")
        entry["hash"] = prev = entry_hash(entry)
    ledger_path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in entries))
    head = {"count": len(entries), "last_seq": entries[-1]["seq"], "last_hash": prev}
    head_path_for(ledger_path).write_text(json.dumps(head))
    nobody = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"  # refused before any student is asked
    assert _promote(world, ledger_path, adapter, student=nobody) == 2
    assert "forged or altered" in capsys.readouterr().err
    assert main(["promote", adapter[:12], "--ledger", str(ledger_path), "--insecure", "--student", nobody]) == 2
    assert "give --keys" in capsys.readouterr().err
