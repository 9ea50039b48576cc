"""The CLI starts without torch: ``seal --help`` and ``seal ledger verify`` import no model library.

Each check runs in a fresh interpreter, since this test process has long imported torch itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from library.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft")

# Runs the CLI with sys.argv[1:] (SystemExit is what argparse raises for --help), then prints the
# heavy modules it imported, one line, after the CLI's own output.
PROBE = f"""
import sys
from apps.cli import build_parser, main
build_parser()
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("exit", code)
print("heavy", [name for name in {HEAVY!r} if name in sys.modules])
"""


def _run_cli(*args: str) -> list[str]:
    """The probe's output lines for ``seal ARGS``, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.splitlines()


def test_help_imports_no_torch():
    lines = _run_cli("--help")
    assert any("usage: seal" in line for line in lines)
    assert lines[-2:] == ["exit 0", "heavy []"]


def test_ledger_verify_imports_no_torch(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.append("note", {"text": "a small ledger"})
    ledger.append("note", {"text": "its second entry"})
    lines = _run_cli("ledger", "verify", "--ledger", str(tmp_path / "ledger.jsonl"))
    assert any("2 entries, verified" in line for line in lines)
    assert lines[-2:] == ["exit 0", "heavy []"]
