"""``seal demo`` with an API teacher: three processes, the teacher calling a loopback fake of the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seal.ledger import verify_ledger
from tests.fake_api import FAKE_KEY, FakeAPI

ROOT = Path(__file__).resolve().parents[1]
KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_demo_with_an_api_teacher_runs_end_to_end(flavour, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", KEY_VARIABLE[flavour]: FAKE_KEY}
    with FakeAPI(flavour) as api:
        api.script.append("429")  # one rate limit on the way: retried, not fatal
        argv = ["demo", "--model", tiny_model_dir, "--limit", "1", "--run-dir", str(run_dir),
                "--teacher", f"{flavour}:fake-model", "--teacher-base-url", api.base_url]
        done = subprocess.run([sys.executable, "-m", "seal", *argv], capture_output=True, text=True, timeout=300,
                              env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(api.generations()) == 2, "the 429 and its retry"

    [outcome] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    [edit] = outcome["self_edits"]
    assert edit["teacher_model"] == f"{flavour}:fake-model"
    assert edit["text"].startswith("It is stated that")
    assert edit["usage"]["input_tokens"] > 0 and edit["usage"]["estimated_cost_usd"] is None
    assert len(outcome["verdicts"]) + len(outcome.get("vetoed", [])) == 1
    assert verify_ledger(run_dir / "ledger.jsonl").ok

    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        assert FAKE_KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert FAKE_KEY not in done.stdout + done.stderr
