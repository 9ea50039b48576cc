"""Task data, split at the source: contexts for the teacher, τ for the auditor.

A task instance (C, τ) lives in one SQuAD-style file,
``[{"title", "context", "questions": [{"question", "answer"}]}]``, but no role
ever holds both halves. :func:`load_contexts` gives the teacher the passages
only; :func:`load_questions` gives the auditor the questions and gold answers
only. Both key a passage by :func:`context_id_for` (a hash of its title and
text), and ``limit``/``offset`` select the same entries in both, so the two
halves meet again only through that id.

Recorded self-edits (files that add ``"completions"`` and ``"prompt"`` to each
entry) are read with :func:`load_recorded_self_edits`; the auditor's retention
set with :func:`load_retention`. Entries are counted from 0 in error messages,
as ``jq '.[3]'`` counts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any

from protocol.canonical import short_id
from protocol.messages import Context

DATA_DIR = Path(str(resources.files("library") / "data"))  # installed package data, never a path beside it
DEMO_DOCUMENTS = DATA_DIR / "demo_documents.json"
"""Ten short documents about fictional entities, with 5 short-answer questions each."""
RETENTION_SET = DATA_DIR / "retention.json"
"""General-knowledge questions the adapted student should still answer like the base model."""
PROBES_FILE = DATA_DIR / "probes.json"
"""The built-in protected probes: prompts whose answers no update may change."""


class DatasetError(Exception):
    """A data file that cannot be used; the message names the file, the entry and the problem."""


@dataclass(frozen=True)
class QAItem:
    """One evaluation question and its gold answers (one or more accepted spellings)."""

    question: str
    answers: list[str]


@dataclass(frozen=True)
class Recorded:
    """Self-edits sampled earlier for one context, replayed instead of running a teacher model."""

    context_id: str
    prompt: str | None
    completions: list[str]


def context_id_for(title: str, text: str) -> str:
    """A stable id for a passage: the first 16 hex digits of sha256(title NUL text)."""
    return short_id(title, text)


# --------------------------------------------------------------------------- public loaders


def load_contexts(
    path: Path | str, limit: int | None = None, offset: int = 0, per_title: int | None = None
) -> list[Context]:
    """The teacher's half: each selected entry's title and passage, in file order.

    Questions and answers are never read here, so they cannot leak to the teacher. ``per_title``: take at
    most that many passages of each title (SQuAD files list a title's passages together, so ``limit`` alone
    gives one or two titles), then apply ``offset`` and ``limit`` to what is left.
    """
    return [context for _, _, context in _passages(Path(path), limit, offset, per_title)]


def load_questions(
    path: Path | str, limit: int | None = None, offset: int = 0, per_title: int | None = None
) -> dict[str, list[QAItem]]:
    """The auditor's half: each selected entry's questions and gold answers, keyed by context id
    (``limit``, ``offset``, ``per_title``: as :func:`load_contexts`)."""
    path = Path(path)
    result: dict[str, list[QAItem]] = {}
    for where, entry, context in _passages(path, limit, offset, per_title):
        questions = _required(path, where, entry, "questions", list)
        result[context.context_id] = [
            _qa_item(path, f"{where}, question {n}", item) for n, item in enumerate(questions)
        ]
    return result


def load_recorded_self_edits(path: Path | str, limit: int | None = None, offset: int = 0) -> dict[str, Recorded]:
    """Recorded self-edits (``"completions"``, optional ``"prompt"``) keyed by context id.

    Entries without completions (field absent, null or empty) are skipped; ``limit``
    and ``offset`` count entries, so they select the same passages as the other loaders.
    """
    path = Path(path)
    result: dict[str, Recorded] = {}
    for where, entry, context in _passages(path, limit, offset):
        completions = entry.get("completions")
        if not completions:
            continue
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise DatasetError(f"{path}: {where} has 'completions' that is not a list of strings")
        prompt = _optional_str(path, where, entry, "prompt")
        result[context.context_id] = Recorded(context.context_id, prompt, list(completions))
    return result


def load_retention(path: Path | str | None = None) -> list[QAItem]:
    """The retention set, ``[{"question", "answer"}]``; by default the packaged one."""
    path = RETENTION_SET if path is None else Path(path)
    return [_qa_item(path, f"entry {n}", item) for n, item in enumerate(_read_list(path))]


# --------------------------------------------------------------------------- reading and checking


def _read_list(path: Path) -> list[Any]:
    """The file's top-level JSON list, or a DatasetError saying why not."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict) and "data" in data:
        raise DatasetError(
            f"{path}: looks like the nested official SQuAD layout ({{'data': [...]}}); "
            "expected a flat list of {'title', 'context', 'questions'} entries"
        )
    if not isinstance(data, list):
        raise DatasetError(f"{path}: not a list of entries (the top level is a JSON {_json_type(data)})")
    return data


def _passages(
    path: Path, limit: int | None, offset: int, per_title: int | None = None
) -> Iterator[tuple[str, dict[str, Any], Context]]:
    """Each selected entry as (its name in messages, the raw entry, its Context), in file order."""
    if offset < 0 or (limit is not None and limit < 0) or (per_title is not None and per_title < 1):
        raise ValueError(f"limit, offset must be non-negative and per_title positive: {limit}, {offset}, {per_title}")
    entries = list(enumerate(_read_list(path)))
    if per_title is not None:
        entries = _first_of_each_title(entries, per_title)
    stop = None if limit is None else offset + limit
    seen: dict[str, str] = {}
    for index, entry in islice(entries, offset, stop):
        where = f"entry {index}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{path}: {where} is not an object (a JSON {_json_type(entry)})")
        title = _optional_str(path, where, entry, "title") or ""
        text = _required(path, where, entry, "context", str)
        if not text.strip():
            raise DatasetError(f"{path}: {where} has an empty 'context'")
        context_id = context_id_for(title, text)
        if context_id in seen:
            raise DatasetError(f"{path}: {where} repeats {seen[context_id]} (same title and context)")
        seen[context_id] = where
        yield where, entry, Context(context_id=context_id, title=title, text=text)


def _first_of_each_title(entries: list[tuple[int, Any]], per_title: int) -> list[tuple[int, Any]]:
    """The first ``per_title`` entries of each title, in file order (entries without a title share one)."""
    taken: dict[str, int] = {}
    kept = []
    for index, entry in entries:
        title = entry.get("title") if isinstance(entry, dict) else None
        key = title if isinstance(title, str) else ""
        if taken.get(key, 0) < per_title:
            taken[key] = taken.get(key, 0) + 1
            kept.append((index, entry))
    return kept


def _qa_item(path: Path, where: str, item: Any) -> QAItem:
    if not isinstance(item, dict):
        raise DatasetError(f"{path}: {where} is not an object (a JSON {_json_type(item)})")
    question = _required(path, where, item, "question", str)
    if not question.strip():
        raise DatasetError(f"{path}: {where} has an empty 'question'")
    return QAItem(question=question, answers=_answers(path, where, item))


def _answers(path: Path, where: str, item: dict[str, Any]) -> list[str]:
    """Gold answers from ``"answer": str`` or ``"answers": [str | {"text": str}]``, deduplicated."""
    if "answers" in item:
        raw = item["answers"]
        if not isinstance(raw, list) or not raw:
            raise DatasetError(f"{path}: {where} has 'answers' that is not a non-empty list")
        answers = [a.get("text") if isinstance(a, dict) else a for a in raw]
    elif "answer" in item:
        answers = [item["answer"]]
    else:
        raise DatasetError(f"{path}: {where} is missing 'answer' (or 'answers')")
    if not all(isinstance(a, str) and a.strip() for a in answers):
        raise DatasetError(f"{path}: {where} has an answer that is not a non-empty string")
    return list(dict.fromkeys(answers))


def _required(path: Path, where: str, obj: dict[str, Any], name: str, kind: type) -> Any:
    if name not in obj:
        raise DatasetError(f"{path}: {where} is missing '{name}'")
    value = obj[name]
    if not isinstance(value, kind):
        wanted = _json_type(kind())
        raise DatasetError(f"{path}: {where} has '{name}' that is a JSON {_json_type(value)}, not a JSON {wanted}")
    return value


def _optional_str(path: Path, where: str, obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"{path}: {where} has '{name}' that is a JSON {_json_type(value)}, not a JSON string")
    return value


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
