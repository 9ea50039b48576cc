"""The faults bench (#15) in miniature: one kill of one role and ~200 fuzz frames, nothing lost, crashed or hung."""

from __future__ import annotations

import json

from apps.governance_cli import find_verdict
from bench.faults import main
from library.ledger import Ledger, read_entries


def test_faults_bench_tiny_run_reports_no_loss_crash_or_hang(tmp_path):
    out = tmp_path / "out"
    argv = ["--trials", "1", "--roles", "teacher", "--frames", "200", "--work-s", "2", "--parallel", "1"]
    report = main([*argv, "--out", str(out), "--work", str(tmp_path / "work")])

    assert set(report) >= {"command", "seed", "wall_s", "summary", "trials", "fuzz"}
    assert report["command"].startswith("python -m bench.faults --trials 1")
    assert json.loads((out / "faults.json").read_text())["command"] == report["command"]
    assert "| role |" in (out / "faults.md").read_text() and report["command"] in (out / "faults.md").read_text()

    (row,) = report["summary"]
    assert (row["role"], row["trials"], row["resumed"], row["ledger verified"]) == ("teacher", 1, 1, 1)
    assert row["lost"] == row["duplicates"] == row["unaudited"] == row["crashes"] == row["hangs"] == 0
    (trial,) = report["trials"]
    assert trial["rejected_refused"] in (True, None) and trial["peak_rss_mib"]

    servers = report["fuzz"]["servers"]
    assert set(servers) == {f"{r} ({m})" for r in ("student", "auditor") for m in ("insecure", "curve")}
    assert sum(s["frames"] for s in servers.values()) >= 200
    for s in servers.values():
        assert not s["crashed"] and s["hangs"] == 0 and s["stale"] == 0 and s["peak_rss_mib"] > 0
        assert any(k.startswith("error:") for k in s["replies"])

    resumed = main([*argv, "--out", str(out), "--work", str(tmp_path / "work")])  # finished parts are kept, not rerun
    assert resumed["trials"] == report["trials"] and resumed["fuzz"] == report["fuzz"]
    assert len((tmp_path / "work" / "trials.jsonl").read_text().splitlines()) == 1


def test_promote_takes_the_verdicts_ledger_entry(tmp_path):
    """`seal promote` hands the student the verdict with its ledger entry's hash (the signed record cannot hold it),
    so the served stack names the entry behind each promotion."""
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    verdict = {"adapter_id": "ab" * 32, "self_edit_id": "e1", "context_id": "c1", "accepted": True, "metric": "loglik",
               "reward": 0.5, "base": {"exact_match": 0, "f1": 0, "loglik": -3, "n_questions": 1},
               "candidate": {"exact_match": 0, "f1": 0, "loglik": -2, "n_questions": 1}, "retention_drop": 0.0,
               "reason": "gain", "ledger_entry": ""}  # fmt: skip
    ledger.append("verdict", {"adapter_id": "ab" * 32, "verdict": verdict})
    ledger.close()
    (entry,) = read_entries(path)
    assert find_verdict(path, "abab").ledger_entry == entry["hash"]


def test_ledger_verify_accepts_a_signed_non_ascii_self_edit(tmp_path):
    """The verifier hashes the recorded self-edit as the signer does (non-ASCII escaped): found by the faults bench,
    where every tiny-model self-edit (random bytes) failed `seal ledger verify --keys`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from library.ledger_signatures import signature_problems
    from protocol.artifacts import self_edit_sha256
    from protocol.signing import sign_verdict
    from tests.examples import SELF_EDIT, VERDICT

    edit = SELF_EDIT.model_copy(update={"text": "Ostrevane \ufffd dates from 1873, café."})
    key = Ed25519PrivateKey.generate()
    verdict = sign_verdict(
        VERDICT.model_copy(update={"self_edit_sha256": self_edit_sha256(edit), "ledger_entry": ""}), key
    )
    record = {name: getattr(verdict, name) for name in ("adapter_id", "context_id", "accepted", "reason")}
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.append(
        "verdict", {**record, "verdict": verdict.model_dump(mode="json"), "self_edit": edit.model_dump(mode="json")}
    )
    ledger.close()
    assert signature_problems(tmp_path / "ledger.jsonl", key.public_key()) == []
