"""The three roles as separate OS processes over ZeroMQ on loopback, with a tiny random model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from library.ledger import read_entries, verify_ledger
from protocol.messages import Verdict
from protocol.signing import check_verdict, load_verify_key
from student.openai_server import VERSION_HEADER, build_server
from student.registry import read_served_state
from student.serve_config import ServeConfig
from tests.test_serve import _free_port, serving

ROOT = Path(__file__).resolve().parents[1]


def _seal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "apps", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def test_demo_runs_three_processes_end_to_end_resumes_and_auto_promotes(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    accept_all = ["--min-gain", "-100", "--max-retention-drop", "1000"]  # promotions need accepted verdicts
    demo = ["demo", "--model", tiny_model_dir, "--limit", "2", "--k", "2", "--run-dir", str(run_dir), *accept_all]
    done = _seal(*demo)
    assert done.returncode == 0, done.stdout + done.stderr
    outcomes = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(outcomes) == 2
    verdicts = [v for o in outcomes for v in o["verdicts"]]
    assert len(verdicts) == 4
    for v in verdicts:
        assert (run_dir / "store" / "adapters" / v["adapter_id"]).is_dir()
    report = verify_ledger(run_dir / "ledger.jsonl")
    assert report.ok and report.entries == 4
    assert "candidates accepted" in done.stdout
    assert re.search(r"^2/2 .+: \d of 2 candidates accepted, best reward", done.stdout, re.M), "a line per context"
    assert "verified" in done.stdout
    assert read_served_state(run_dir / "store" / "served").stack == [], "nothing is promoted without the option"
    assert "auto-promote" not in done.stdout

    # A seal serve on the run's store, started now, must serve what the resumed run promotes on its next request.
    config = ServeConfig(model=tiny_model_dir, store=run_dir / "store", port=_free_port(), verify_keys=run_dir / "keys")
    with serving(build_server(config, frozenset({"sk-e2e"})), config) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-e2e", max_retries=0)
        before = client.models.with_raw_response.list().headers[VERSION_HEADER]
        again = _seal(*demo, "--auto-promote")
        assert again.returncode == 0, again.stdout + again.stderr
        assert verify_ledger(run_dir / "ledger.jsonl").entries == 4, "a resumed run must not redo finished contexts"
        served = client.get("/served", cast_to=object)
    best: dict[str, tuple[int, dict]] = {}  # per context: the accepted verdict of the highest reward, its position
    for position, entry in enumerate(read_entries(run_dir / "ledger.jsonl")):
        verdict = entry["record"]["verdict"]
        held = best.get(verdict["context_id"], (0, {"reward": float("-inf")}))[1]
        if verdict["accepted"] and verdict["reward"] > held["reward"]:
            best[verdict["context_id"]] = (position, verdict)
    # Every candidate of one pass was judged against the base model: the first context's best is promoted, and
    # the second's is not, as it was not judged on top of it (Verdict.on_top_of).
    expected = [verdict["adapter_id"] for _, verdict in sorted(best.values(), key=lambda held: held[0])][:1]
    state = read_served_state(run_dir / "store" / "served")
    assert len(best) == 2 and state.stack == expected, "the first context's best accepted adapter"
    promotions = [e["record"] for e in read_entries(run_dir / "store" / "served" / "history.jsonl")]
    assert [p["after"][-1] for p in promotions] == expected and {p["version"] for p in promotions} == {1}
    for adapter, record in zip(expected, promotions, strict=True):
        check_verdict(Verdict.model_validate(record["verdict"]), load_verify_key(run_dir / "keys"), adapter)
    assert f"auto-promote: promoted 1 adapter(s): {expected[0][:12]}" in again.stdout
    assert "1 judged against another stack, not promoted" in again.stdout
    assert served["stack"] == expected and served["version"] != before, "the running server serves the new stack"


def test_broken_model_path_is_one_clear_line(tmp_path):
    done = _seal("models", str(tmp_path / "no-such-model"))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no-such-model" in lines[0], done.stderr


def test_unreachable_student_is_a_clear_error(tiny_model_dir, tmp_path):
    done = _seal(
        "teacher",
        "--insecure",
        "--model",
        tiny_model_dir,
        "--student",
        "tcp://127.0.0.1:9",
        "--auditor",
        "tcp://127.0.0.1:9",
        "--ready-timeout-s",
        "1",
        "--run-dir",
        str(tmp_path),
    )
    assert done.returncode == 2
    assert "did not come up" in done.stderr and "Traceback" not in done.stderr


def test_invalid_setting_names_the_flag(tmp_path):
    done = _seal("student", "--train.rank", "0", "--store", str(tmp_path))
    assert done.returncode == 2
    assert "--train.rank" in done.stderr


def test_demo_flags_reach_the_roles_and_each_role_accepts_them(monkeypatch, tmp_path):
    import apps.demo
    from apps.cli import _demo, build_parser
    from apps.cli_config import build_config
    from auditor.config import AuditorConfig
    from student.config import StudentConfig
    from teacher.config import TeacherConfig

    configs = {"student": StudentConfig, "auditor": AuditorConfig, "teacher": TeacherConfig}

    captured = []
    monkeypatch.setattr(apps.demo, "run_demo", lambda opts, **_: captured.append(opts) or 0)
    flags = ["--epochs", "2", "--anchors", "16", "--anchor-loss", "kl", "--max-retention-drop", "1.5"]
    flags += ["--dtype", "bfloat16", "--threads", "1"]
    probes = tmp_path / "probes.json"
    probes.write_text('[{"prompt": "What is 2+2?", "expect": "answer", "answers": ["4"]}]')
    flags += ["--probes", str(probes), "--probe-answers-may-lose", "0", "--per-title", "2"]
    flags += ["--format", "self_qa", "--no-worked-example"]
    _demo(build_parser().parse_args(["demo", *flags, "--run-dir", str(tmp_path)]))
    files = apps.demo.write_role_configs(apps.demo.role_configs(captured[0]), tmp_path / "config")
    commands = apps.demo.role_commands(captured[0], files, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    built = {}
    for role, argv in commands.items():
        parsed = build_parser().parse_args(argv[3:])  # argv[3:]: after "python -m apps"
        assert (parsed.command, parsed.threads) == (role, 1)
        built[role] = build_config(configs[role], parsed)
        assert built[role].dtype == "bfloat16"
    train = built["student"].train
    assert (train.epochs, train.learning_rate, train.anchors, train.anchor_loss) == (2, 3e-4, 16, "kl")  # lr: default
    assert built["auditor"].max_retention_drop == 1.5
    assert built["auditor"].per_title == built["teacher"].per_title == 2, "both read the same passages"
    assert (built["teacher"].format, built["teacher"].worked_example) == ("self_qa", False)
    assert (built["auditor"].probes, built["auditor"].probe_answers_may_lose) == (probes, 0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["student", "--threads", "0"])


def test_protected_probe_flags_reach_seal_adapts_auditor_and_are_refused_where_no_probes_run(tmp_path):
    from apps.adapt import _auditor_settings
    from apps.adapt_config import AdaptConfig
    from apps.cli import _demo, _train_teacher, build_parser
    from apps.cli_config import ConfigError
    from auditor.tau_config import DocumentTauConfig

    config = AdaptConfig(probes=tmp_path / "facts.json", probe_answers_may_lose=0)
    settings = _auditor_settings(config, DocumentTauConfig())
    assert (settings["probes"], settings["probe_answers_may_lose"]) == (tmp_path / "facts.json", 0)
    assert "probes" not in _auditor_settings(AdaptConfig(), DocumentTauConfig()), "unset: the auditor's own default"
    args = build_parser().parse_args(["demo", "--domain", "fewshot", "--probe-answers-may-lose", "0"])
    with pytest.raises(ConfigError, match="--probe-answers-may-lose do not apply"):
        _demo(args)
    args = build_parser().parse_args(
        ["train-teacher", "--domain", "fewshot", "--data", "x.json", "--format", "rewrite"]
    )
    with pytest.raises(ConfigError, match="--format do not apply"):
        _train_teacher(args)
