"""scripts/gpu-check.sh --dry-run: the GPU check's own logic on a CPU, with a tiny shape (about a minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_table_and_the_round_estimate(tmp_path):
    pytest.importorskip("trl")
    results = tmp_path / "results"
    # The demo documents as recorded self-edits: the run needs no file from outside the repository.
    env = {**os.environ, "SEAL_GPU_DATA": "demo", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        ["bash", "scripts/gpu-check.sh", str(results), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    written = {path.name for path in results.iterdir()}
    tables = {f"inner_loop_qwen2.5-{size}.{ext}" for size in ("0.5b", "7b") for ext in ("md", "json")}
    assert tables | {"summary.md", "summary.json", "gpu-check.log"} <= written
    assert len(written) <= 8, "the device tool brings back at most 8 files from $OUT"
    small, large = (json.loads((results / f"inner_loop_qwen2.5-{s}.json").read_text()) for s in ("0.5b", "7b"))
    assert [row["k"] for row in small["rows"]] == [1, 2] and [row["k"] for row in large["rows"]] == [1]
    assert all(row["seal_per_hour"] > 0 and row["ratio"] > 0 for row in small["rows"])
    assert all(row["seal_per_hour"] > 0 for row in large["rows"]), "the large step runs without the baseline"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["estimate"]["candidates"] == 750 and summary["estimate"]["minutes"] > 0
    assert set(summary["goals"]) == {"ratio_at_k5_small", "flops_pct", "round_minutes"}
    log = (results / "gpu-check.log").read_text()
    for step in ("env", "wheels", "tests", "small", "large", "summary"):
        assert f"step {step}: ok" in log, log[-3000:]
    assert "skipped" in log, "without CUDA the gpu tests skip themselves"
