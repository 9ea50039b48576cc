"""Questions a user gives for their documents: JSONL, CSV or YAML rows, each naming a passage or a document.

A row has ``question``, ``answer`` (or ``answers``: a list, or in CSV one cell with answers separated by ``|``)
and ``passage`` (a passage's content id) or ``document`` (a document's path as given, its file name or its
name without the suffix). A question for a document goes to the first of its passages that holds the answer.

A file that cannot be read, a row without a question or answer, or a row naming a passage or document that
was not read is a :class:`~library.datasets.DatasetError`: one line naming the file and the row.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from auditor.grading import normalize_answer
from library.datasets import DatasetError, QAItem
from library.documents import DocumentSet


@dataclass(frozen=True)
class UserQuestion:
    """One row of a question file."""

    where: str  # "FILE: row N", for messages
    item: QAItem
    passage: str | None
    document: str | None


def read_question_file(path: Path) -> list[UserQuestion]:
    """The rows of one JSONL, CSV or YAML question file, checked."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    elif suffix == ".csv":
        try:
            rows = list(csv.DictReader(text.splitlines()))
        except csv.Error as exc:
            raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    elif suffix in (".yaml", ".yml"):
        rows = _yaml_rows(path, text)
    else:
        raise DatasetError(f"{path}: unsupported question file type {suffix or '(none)'} (use .jsonl, .csv or .yaml)")
    return [_row(f"{path}: row {n}", row) for n, row in enumerate(rows, start=1)]


def assign_questions(files: list[Path], documents: DocumentSet) -> tuple[dict[str, list[QAItem]], Counter[str]]:
    """The user's questions by passage id, and how many were dropped (a document's question no passage answers)."""
    by_passage: dict[str, list[QAItem]] = {}
    dropped: Counter[str] = Counter()
    texts = {p.context_id: f" {normalize_answer(p.text)} " for p in documents.passages}
    names = _document_names(documents)
    for path in files:
        for row in read_question_file(path):
            if row.passage is not None:
                if row.passage not in texts:
                    raise DatasetError(f"{row.where} names passage {row.passage!r}, which is not a passage read")
                by_passage.setdefault(row.passage, []).append(row.item)
                continue
            document = names.get(str(row.document))
            if document is None:
                known = ", ".join(sorted(documents.documents)) or "none"
                raise DatasetError(f"{row.where} names document {row.document!r}, which was not read (read: {known})")
            golds = [f" {normalize_answer(a)} " for a in row.item.answers]
            home = next((cid for cid in documents.documents[document] if any(g in texts[cid] for g in golds)), None)
            if home is None:
                dropped["answer in no passage of its document"] += 1
            else:
                by_passage.setdefault(home, []).append(row.item)
    return by_passage, dropped


def _document_names(documents: DocumentSet) -> dict[str, str]:
    """Every name a row may use for a document (path as given, resolved path, file name, stem) -> the document."""
    names: dict[str, str] = {}
    for document in documents.documents:
        path = Path(document)
        for alias in (path.stem, path.name, str(path.resolve()), document):
            names[alias] = document
    return names


def _jsonl_rows(path: Path, text: str) -> list[Any]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    return rows


def _yaml_rows(path: Path, text: str) -> list[Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not YAML ({exc})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of questions at the top level")
    return data


def _row(where: str, row: Any) -> UserQuestion:
    if not isinstance(row, dict):
        raise DatasetError(f"{where} is not a mapping of question, answer and passage or document")
    question = str(row.get("question") or "").strip()
    answers = _answers(row)
    if not question or not answers:
        raise DatasetError(f"{where} needs a non-empty 'question' and 'answer' (or 'answers')")
    passage, document = row.get("passage") or None, row.get("document") or None
    if (passage is None) == (document is None):
        raise DatasetError(f"{where} needs exactly one of 'passage' (a passage id) or 'document'")
    return UserQuestion(where, QAItem(question=question, answers=answers), passage and str(passage), document)


def _answers(row: dict[str, Any]) -> list[str]:
    raw = row.get("answers", row.get("answer"))
    if isinstance(raw, str):
        raw = raw.split("|")
    if not isinstance(raw, list):
        return []
    return list(dict.fromkeys(str(a).strip() for a in raw if str(a).strip()))
