"""An API teacher in the three processes, calling a loopback fake of the API: ``seal demo`` with the OpenAI
SDK, ``seal train-teacher`` with the Anthropic SDK (each wire format is tested on its own in test_api_teachers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from library.ledger import verify_ledger
from tests.fake_api import FAKE_KEY, FakeAPI, _prompt_of

ROOT = Path(__file__).resolve().parents[1]
KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def test_demo_with_an_api_teacher_runs_end_to_end(tiny_model_dir, tmp_path):
    flavour, run_dir = "openai", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", KEY_VARIABLE[flavour]: FAKE_KEY}
    with FakeAPI(flavour) as api:
        api.script.append("429")  # one rate limit on the way: retried, not fatal
        argv = ["demo", "--model", tiny_model_dir, "--limit", "1", "--run-dir", str(run_dir),
                "--teacher", f"{flavour}:fake-model", "--teacher-base-url", api.base_url]
        done = subprocess.run([sys.executable, "-m", "apps", *argv], capture_output=True, text=True, timeout=300,
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

    assert_key_kept_out(run_dir, done)


def assert_key_kept_out(run_dir: Path, done: subprocess.CompletedProcess) -> None:
    """The API key is in no file of the run folder and in no output."""
    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        assert FAKE_KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert FAKE_KEY not in done.stdout + done.stderr


def test_restem_with_an_api_teacher_grows_an_exemplar_bank_recorded_in_the_ledger(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "restem"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "ANTHROPIC_API_KEY": FAKE_KEY}
    with FakeAPI("anthropic") as api:
        argv = ["train-teacher", "--model", tiny_model_dir, "--data", str(ROOT / "library/data/demo_documents.json"),
                "--limit", "2", "--rounds", "2", "--k", "1", "--epochs", "2", "--run-dir", str(run_dir),
                "--teacher", "anthropic:fake-model", "--teacher-base-url", api.base_url]
        done = subprocess.run([sys.executable, "-m", "apps", *argv], capture_output=True, text=True, timeout=600,
                              env=env, cwd=ROOT)
        prompts = [_prompt_of(body) for body in api.generations()]
    assert done.returncode == 0, done.stdout + done.stderr
    versions = json.loads((run_dir / "teacher" / "versions.json").read_text())
    assert [v["version"] for v in versions] == ["v1", "v2"]
    made = [v for v in versions if v["kind"] == "exemplars"]
    assert made, "the passages were learned (log-lik rose), so round 0 kept self-edits for the bank"
    bank = json.loads(Path(made[0]["artifact"]).read_text())
    assert bank["exemplars"] and bank["exemplars"][0]["text"].startswith("It is stated that")
    assert any("Here are" in p and "examples" in p for p in prompts[2:]), "round 1's prompts show the exemplars"
    recorded = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "teacher_version" and e["record"]["kind"] == "exemplars" for e in recorded)
    assert verify_ledger(run_dir / "ledger.jsonl").ok
    assert_key_kept_out(run_dir, done)
