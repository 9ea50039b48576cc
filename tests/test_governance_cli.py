"""The governance commands against a real student over CURVE: promote from the ledger, status, rollback,
and offline verification of the ledger's signatures."""

from __future__ import annotations

import json
import threading
import time

import pytest

from apps.cli import main
from apps.processes import free_tcp_ports
from auditor.config import AuditorConfig
from auditor.decision import Decider, ModelResult
from library.datasets import QAItem
from library.jsonl import read_jsonl
from library.ledger import Ledger, canonical_json, entry_hash
from protocol.codec import STUDENT_CHANNEL
from protocol.messages import ApplySelfEdits, CandidateToJudge, TrainConfig
from protocol.security import create_role_keys, server_security
from protocol.signing import create_signing_key, load_signing_key, load_verify_key
from protocol.transport import Server
from student.config import StudentConfig
from student.service import Student
from tests.test_student import _job

TAU = [QAItem("Who founded Ostrevane?", ["Ilsabet Quorne"])]


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gov")
    keys = root / "keys"
    assert main(["keys", "init", "--keys", str(keys)]) == 0
    settings = TrainConfig(rank=4, alpha=8, epochs=2, batch_size=4)
    student = Student(StudentConfig(model=tiny_model_dir, store=root / "store", train=settings), load_verify_key(keys))
    endpoint = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"
    server = Server(endpoint, STUDENT_CHANNEL, "student", student.handle, security=server_security(keys, "student"))
    server.start()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield root, keys, student, endpoint
    server.stop()
    thread.join(timeout=5)


def _record_verdict(root, keys, student, gain: float, context: str = "c1", on_top_of: list[str] | None = None) -> str:
    """An adapter trained by ``student`` and its verdict, signed and in the ledger; judged on top of ``on_top_of``."""
    job = _job(self_edit=f"Quorne founded it (gain {gain}).")
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[job])).candidates[0]
    config = AuditorConfig(model=student.config.model, ledger=root / "ledger.jsonl", min_gain=0.05)
    decider = Decider(config, Ledger(config.ledger), [], load_signing_key(keys))
    base = ModelResult(["?"], [-3.0], [], [])
    cand = ModelResult(["Quorne"], [-3.0 + gain], [], [])
    item = CandidateToJudge(self_edit=job.self_edit, candidate=candidate)
    decider.decide(context, TAU, item, base, cand, [], on_top_of=on_top_of)
    return candidate.adapter.adapter_id


def test_promote_status_rollback_through_the_cli(world, capsys):
    root, keys, student, endpoint = world
    accepted = _record_verdict(root, keys, student, gain=1.0)
    rejected = _record_verdict(root, keys, student, gain=0.0)
    common = ["--keys", str(keys), "--student", endpoint]
    assert main(["promote", accepted[:12], "--ledger", str(root / "ledger.jsonl"), *common]) == 0
    assert main(["status", *common]) == 0
    assert f"base + {accepted[:12]}" in capsys.readouterr().out
    assert main(["promote", rejected[:12], "--ledger", str(root / "ledger.jsonl"), *common]) == 2
    assert "rejected" in capsys.readouterr().err
    assert main(["rollback", *common]) == 0
    assert "served (version 2): base\n" in capsys.readouterr().out
    assert main(["ledger", "verify", "--ledger", str(root / "ledger.jsonl"), "--keys", str(keys)]) == 0


def test_a_cli_without_keys_cannot_reach_a_curve_student(world, capsys):
    _, _, _, endpoint = world
    assert main(["status", "--insecure", "--timeout", "1", "--student", endpoint]) == 2
    assert "did not answer" in capsys.readouterr().err


def test_ledger_verify_catches_a_verdict_signed_by_another_key(world, tmp_path, capsys):
    root, keys, student, _ = world
    _record_verdict(root, keys, student, gain=2.0)
    other = tmp_path / "other-keys"
    other.mkdir()
    create_role_keys(other)
    create_signing_key(other)
    assert main(["ledger", "verify", "--ledger", str(root / "ledger.jsonl"), "--keys", str(other)]) == 1
    assert "not the auditor's" in capsys.readouterr().out


def test_ledger_verify_catches_a_resealed_alteration(world, tmp_path, capsys):
    """An attacker who edits a verdict and recomputes the whole hash chain still fails the signature check."""
    root, keys, student, _ = world
    _record_verdict(root, keys, student, gain=3.0)
    lines = [json.loads(line) for line in (root / "ledger.jsonl").read_text().splitlines()]
    forged_path = tmp_path / "forged.jsonl"
    prev = "0" * 64
    for entry in lines:
        if entry["kind"] == "verdict" and not entry["record"]["accepted"]:
            entry["record"]["verdict"]["accepted"] = entry["record"]["accepted"] = True
        entry["prev"] = prev
        entry.pop("hash")
        entry["hash"] = prev = entry_hash(entry)
    forged_path.write_bytes(b"".join(canonical_json(e) + b"\n" for e in lines))
    head = {"count": len(lines), "last_seq": lines[-1]["seq"], "last_hash": prev}
    forged_path.with_suffix(".head.json").write_text(json.dumps(head))
    assert main(["ledger", "verify", "--ledger", str(forged_path), "--keys", str(keys)]) == 1
    assert "forged or altered" in capsys.readouterr().out


def test_shadow_report_summarises_a_shadow_log(tmp_path, capsys):
    from student.sampling import Generation
    from student.shadow_log import ShadowLog

    log = ShadowLog(tmp_path / "shadow.jsonl", "cd" * 32)
    for prompt, served, shadow in [("Who?", "Quorne", "Quorne"), ("When?", "1873", "1874")]:
        log.record("v-1", prompt, served, Generation(prompt_tokens=1, deltas=iter([shadow])))
    deadline = time.monotonic() + 10
    while len(read_jsonl(tmp_path / "shadow.jsonl")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the log is written off the request's thread
    assert main(["shadow-report", str(tmp_path / "shadow.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "2 requests" in out and "agreed on 50%" in out and "1874" in out
    assert main(["shadow-report", str(tmp_path / "missing.jsonl")]) == 2


def test_an_adapter_judged_against_another_stack_than_the_served_one_is_refused(world, capsys):
    """A verdict names the stack its candidate was judged against; the registry promotes only onto that stack."""
    root, keys, student, endpoint = world
    first = _record_verdict(root, keys, student, gain=1.0)
    on_base = _record_verdict(root, keys, student, gain=1.1, context="c2")  # judged against the base model
    on_first = _record_verdict(root, keys, student, gain=1.2, context="c3", on_top_of=[first])
    common = ["--ledger", str(root / "ledger.jsonl"), "--keys", str(keys), "--student", endpoint]
    assert main(["promote", on_first[:12], *common]) == 2, "judged on top of an adapter that is not served"
    assert "judged on top of" in capsys.readouterr().err
    assert main(["promote", first[:12], *common]) == 0
    assert main(["promote", on_base[:12], *common]) == 2
    assert "the base model, but" in capsys.readouterr().err
    assert main(["promote", on_first[:12], *common]) == 0
    assert main(["ledger", "verify", "--ledger", str(root / "ledger.jsonl"), "--keys", str(keys)]) == 0


def test_the_cli_waits_for_a_student_that_is_still_starting(world, capsys):
    """`seal student ... &` then `seal status` at once: the CLI waits for it (up to --timeout), not 2 pings."""
    _, keys, student, _ = world
    endpoint = f"tcp://127.0.0.1:{free_tcp_ports(1)[0]}"
    server = Server(endpoint, STUDENT_CHANNEL, "student", student.handle, security=server_security(keys, "student"))
    late = threading.Timer(12.0, server.start)  # longer than two 5 s heartbeat timeouts
    late.start()
    thread = threading.Thread(target=lambda: (late.join(), server.serve()), daemon=True)
    thread.start()
    try:
        assert main(["status", "--keys", str(keys), "--student", endpoint, "--timeout", "40"]) == 0
        assert "served (version" in capsys.readouterr().out
    finally:
        late.cancel()
        server.stop()
        thread.join(timeout=5)
