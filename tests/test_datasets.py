"""The data loaders: the packaged files, the teacher/auditor split, selection, bad files, shared data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from library.datasets import (
    DEMO_DOCUMENTS,
    RETENTION_SET,
    DatasetError,
    QAItem,
    context_id_for,
    load_contexts,
    load_questions,
    load_recorded_self_edits,
    load_retention,
)
from tests.shared_data import SHARED_DATA, SQUAD_DEV
from tests.shared_data import SQUAD_TRAIN_SELF_EDITS as SQUAD_SELF_EDITS

needs_shared = pytest.mark.skipif(
    not (SQUAD_DEV.exists() and SQUAD_SELF_EDITS.exists()),
    reason=f"shared SQuAD files not found under {SHARED_DATA}",
)


def write_json(tmp_path: Path, data: object, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def entry(n: int, **extra: object) -> dict[str, object]:
    return {
        "title": f"Doc {n}",
        "context": f"Passage number {n} mentions Zorbleton.",
        "questions": [{"question": f"What does passage {n} mention?", "answer": "Zorbleton"}],
        **extra,
    }


# --------------------------------------------------------------------------- packaged data


def test_demo_documents_answers_are_verbatim_spans() -> None:
    raw = json.loads(DEMO_DOCUMENTS.read_text(encoding="utf-8"))
    contexts = load_contexts(DEMO_DOCUMENTS)
    questions = load_questions(DEMO_DOCUMENTS)
    assert len(contexts) == len(raw) >= 8
    for context in contexts:
        assert 60 <= len(context.text.split()) <= 110, context.title
        items = questions[context.context_id]
        assert 3 <= len(items) <= 5, context.title
        for item in items:
            for answer in item.answers:
                assert answer.lower() in context.text.lower(), (context.title, answer)
                assert len(answer.split()) in range(1, 5), answer


def test_retention_set_loads() -> None:
    items = load_retention()
    assert load_retention(RETENTION_SET) == items
    assert len(items) >= 12
    assert all(item.question.endswith("?") and item.answers for item in items)


# --------------------------------------------------------------------------- the split


def test_context_ids_agree_and_keep_order() -> None:
    contexts = load_contexts(DEMO_DOCUMENTS)
    questions = load_questions(DEMO_DOCUMENTS)
    assert list(questions) == [c.context_id for c in contexts]
    assert all(c.context_id == context_id_for(c.title, c.text) for c in contexts)
    assert len({c.context_id for c in contexts}) == len(contexts)


def test_context_id_is_stable_and_separates_title_from_text() -> None:
    assert context_id_for("A", "B") == context_id_for("A", "B")
    assert len(context_id_for("A", "B")) == 16
    assert context_id_for("AB", "C") != context_id_for("A", "BC")


def test_contexts_carry_no_questions_or_answers(tmp_path: Path) -> None:
    secret = {"question": "QUESTION-SECRET-1?", "answer": "ANSWER-SECRET-1"}
    data = [{"title": "T", "context": "A plain passage.", "questions": [secret], "gold": "GOLD-SECRET-1"}]
    path = write_json(tmp_path, data)
    (context,) = load_contexts(path)
    assert set(context.model_dump()) == {"context_id", "title", "text"}
    dumped = context.model_dump_json()
    assert "SECRET" not in dumped
    assert load_questions(path)[context.context_id] == [QAItem("QUESTION-SECRET-1?", ["ANSWER-SECRET-1"])]


def test_contexts_need_no_questions(tmp_path: Path) -> None:
    path = write_json(tmp_path, [{"title": "T", "context": "Only a passage."}])
    assert [c.text for c in load_contexts(path)] == ["Only a passage."]
    with pytest.raises(DatasetError, match=r"entry 0 is missing 'questions'"):
        load_questions(path)


def test_answers_field_variants(tmp_path: Path) -> None:
    questions = [
        {"question": "a?", "answer": "x"},
        {"question": "b?", "answers": ["y", "Y", "y"]},
        {"question": "c?", "answers": [{"text": "z", "answer_start": 0}]},
    ]
    path = write_json(tmp_path, [{"title": "T", "context": "x y z", "questions": questions}])
    (items,) = load_questions(path).values()
    assert [i.answers for i in items] == [["x"], ["y", "Y"], ["z"]]


# --------------------------------------------------------------------------- selection


def test_limit_and_offset_select_the_same_passages(tmp_path: Path) -> None:
    path = write_json(tmp_path, [entry(n) for n in range(6)])
    contexts = load_contexts(path, limit=2, offset=3)
    assert [c.title for c in contexts] == ["Doc 3", "Doc 4"]
    assert list(load_questions(path, limit=2, offset=3)) == [c.context_id for c in contexts]
    assert len(load_contexts(path, offset=4)) == 2
    assert load_contexts(path, limit=0) == []
    assert load_contexts(path, offset=10) == []
    with pytest.raises(ValueError, match="non-negative"):
        load_contexts(path, offset=-1)


def test_per_title_takes_the_first_passages_of_each_title_before_limit_and_offset(tmp_path: Path) -> None:
    entries = [{**entry(n), "title": f"Title {n // 3}"} for n in range(9)]  # three titles of three passages
    path = write_json(tmp_path, entries)
    contexts = load_contexts(path, per_title=2, offset=1, limit=4)
    assert [(c.title, c.text) for c in contexts] == [
        ("Title 0", entries[1]["context"]),
        ("Title 1", entries[3]["context"]),
        ("Title 1", entries[4]["context"]),
        ("Title 2", entries[6]["context"]),
    ]
    assert list(load_questions(path, per_title=2, offset=1, limit=4)) == [c.context_id for c in contexts]
    with pytest.raises(ValueError, match="per_title positive"):
        load_contexts(path, per_title=0)


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(DatasetError, match=r"absent\.json: no such file"):
        load_contexts(path)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("[{not json", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken\.json: not JSON"):
        load_questions(path)


@pytest.mark.parametrize("data", [{"title": "T"}, "text", 3])
def test_not_a_list(tmp_path: Path, data: object) -> None:
    with pytest.raises(DatasetError, match=r"data\.json: not a list"):
        load_contexts(write_json(tmp_path, data))


def test_nested_squad_layout_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="official SQuAD layout"):
        load_contexts(write_json(tmp_path, {"version": "1.1", "data": []}))


def test_entry_missing_context(tmp_path: Path) -> None:
    entries = [entry(n) for n in range(5)]
    del entries[3]["context"]
    path = write_json(tmp_path, entries)
    for loader in (load_contexts, load_questions, load_recorded_self_edits):
        with pytest.raises(DatasetError, match=r"data\.json: entry 3 is missing 'context'"):
            loader(path)
    assert len(load_contexts(path, limit=3)) == 3  # unselected entries are not checked


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ({"question": "q?"}, r"entry 1, question 0 is missing 'answer' \(or 'answers'\)"),
        ({"answer": "a"}, r"entry 1, question 0 is missing 'question'"),
        ({"question": "q?", "answers": []}, r"question 0 has 'answers' that is not a non-empty list"),
        ({"question": "q?", "answer": 7}, r"question 0 has an answer that is not a non-empty string"),
        ("q?", r"entry 1, question 0 is not an object"),
    ],
)
def test_bad_questions(tmp_path: Path, question: object, message: str) -> None:
    path = write_json(tmp_path, [entry(0), {"title": "T", "context": "C", "questions": [question]}])
    with pytest.raises(DatasetError, match=message):
        load_questions(path)


def test_bad_entries(tmp_path: Path) -> None:
    cases = {
        "not an object": ["just a string"],
        "has 'context' that is a JSON number, not a JSON string": [{"title": "T", "context": 5}],
        "has an empty 'context'": [{"title": "T", "context": "  "}],
        "has 'title' that is a JSON array, not a JSON string": [{"title": ["T"], "context": "C"}],
        "entry 1 repeats entry 0": [entry(0), entry(0)],
    }
    for message, data in cases.items():
        with pytest.raises(DatasetError, match=message):
            load_contexts(write_json(tmp_path, data))


def test_bad_retention_file(tmp_path: Path) -> None:
    path = write_json(tmp_path, [{"question": "a?", "answer": "b"}, {"question": "c?"}], name="ret.json")
    with pytest.raises(DatasetError, match=r"ret\.json: entry 1 is missing 'answer'"):
        load_retention(path)


# --------------------------------------------------------------------------- recorded self-edits


def test_recorded_self_edits(tmp_path: Path) -> None:
    entries = [
        entry(0, completions=["1. a", "2. b"], prompt="P0"),
        entry(1),
        entry(2, completions=[]),
        entry(3, completions=["only"]),
    ]
    path = write_json(tmp_path, entries)
    ids = [c.context_id for c in load_contexts(path)]
    recorded = load_recorded_self_edits(path)
    assert list(recorded) == [ids[0], ids[3]]
    assert recorded[ids[0]].prompt == "P0" and recorded[ids[0]].completions == ["1. a", "2. b"]
    assert recorded[ids[3]].prompt is None and recorded[ids[3]].context_id == ids[3]
    assert list(load_recorded_self_edits(path, limit=2, offset=2)) == [ids[3]]


def test_recorded_self_edits_reject_non_strings(tmp_path: Path) -> None:
    path = write_json(tmp_path, [entry(0, completions=["ok", 3])])
    with pytest.raises(DatasetError, match=r"entry 0 has 'completions' that is not a list of strings"):
        load_recorded_self_edits(path)


# --------------------------------------------------------------------------- shared files


@needs_shared
def test_shared_squad_dev_loads() -> None:
    contexts = load_contexts(SQUAD_DEV)
    questions = load_questions(SQUAD_DEV)
    assert len(contexts) == 1867
    assert list(questions) == [c.context_id for c in contexts]
    assert sum(len(items) for items in questions.values()) == 9596
    assert load_contexts(SQUAD_DEV, limit=5, offset=100) == contexts[100:105]


@needs_shared
def test_shared_recorded_self_edits_load() -> None:
    contexts = load_contexts(SQUAD_SELF_EDITS)
    recorded = load_recorded_self_edits(SQUAD_SELF_EDITS)
    questions = load_questions(SQUAD_SELF_EDITS)
    assert len(contexts) == len(recorded) == 100
    assert list(recorded) == list(questions) == [c.context_id for c in contexts]
    first = recorded[contexts[0].context_id]
    assert len(first.completions) == 10
    assert first.prompt is not None and contexts[0].text in first.prompt
