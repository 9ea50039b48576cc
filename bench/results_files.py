"""What every small bench does around its measurement: its command line, and its results as JSON and Markdown."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any


def command_line(module: str, argv: list[str] | None) -> str:
    """The exact command that ran ``module`` (``argv``: as given to its ``main``; None: this process's)."""
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def write_results(out: Path, name: str, record: dict[str, Any], table: str) -> None:
    """``out/name.json`` (``record``, which names its command) and ``out/name.md`` (``table``), then the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    (out / f"{name}.md").write_text(table)
    print(table)
