"""``seal bench knowledge`` on a tiny model: every condition scored, recorded, plotted, and resumable."""

from __future__ import annotations

import json

import pytest

from apps.cli_config import ConfigError
from apps.knowledge_bench import read_jsonl, run_knowledge_bench
from apps.knowledge_config import NO_ADAPTATION, PASSAGE_ONLY, RECORDED, KnowledgeBenchConfig
from apps.knowledge_report import markdown_table, merge_runs, paired_gains, summarise, unpack_runs
from protocol.messages import TrainConfig
from teacher.backends import TransformersTeacher
from teacher.sft import SFTConfig, train_teacher_adapter
from teacher.versions import TeacherVersion, VersionBook

PASSAGES = [
    {
        "title": "Ostrevane",
        "context": "Ostrevane is a river town founded in 1873 by Ilsabet Quorne.",
        "questions": [
            {"question": "Who founded Ostrevane?", "answer": "Ilsabet Quorne"},
            {"question": "When was Ostrevane founded?", "answer": "1873"},
        ],
        "completions": ["Ilsabet Quorne founded Ostrevane.\nOstrevane dates from 1873.", "unused second completion"],
    },
    {
        "title": "Velmora",
        "context": "Velmora is a glass bell cast by Doran Achte in 1911.",
        "questions": [{"question": "Who cast Velmora?", "answer": "Doran Achte"}],
    },
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "passages.json"
    path.write_text(json.dumps(PASSAGES))
    return path


@pytest.fixture
def teacher_run(tmp_path, tiny_model_dir):
    """A run folder holding one LoRA teacher version, as `seal train-teacher` leaves it."""
    teacher = TransformersTeacher(tiny_model_dir, device="cpu")
    pairs = [("Write implications.", "A fact.\nAnother fact.")]
    result = train_teacher_adapter(teacher.base_model, teacher.tokenizer, pairs, tiny_model_dir, SFTConfig(rank=4))
    book = VersionBook(tmp_path / "restem")
    ref = book.store.put_adapter(result.folder, tiny_model_dir, {})
    book.add(TeacherVersion("v1", 0, "lora", ref.uri, ref.adapter_id, None, 1, (1.0,)))
    return tmp_path / "restem"


def _config(tiny_model_dir, data_file, tmp_path, **overrides) -> KnowledgeBenchConfig:
    settings = TrainConfig(rank=4, alpha=8, epochs=2, batch_size=4, learning_rate=1e-2)
    values = dict(data=data_file, model=tiny_model_dir, device="cpu", train=settings, out=tmp_path / "out")
    values["sampling"] = {"temperature": 0.7, "max_new_tokens": 24}
    return KnowledgeBenchConfig(**(values | {"answer_tokens": 8} | overrides))


def test_single_passage_mode_scores_every_condition_and_resumes(tiny_model_dir, data_file, teacher_run, tmp_path):
    config = _config(tiny_model_dir, data_file, tmp_path, teacher_run=teacher_run)
    table = run_knowledge_bench(config)
    results = json.loads((config.out / "results.json").read_text())
    conditions = [NO_ADAPTATION, PASSAGE_ONLY, "teacher v0", RECORDED, "teacher v1"]  # the paper's (a)-(e)
    assert [row["condition"] for row in results["summary"]] == conditions
    assert all(row["n_questions"] == 3 for row in results["summary"])
    assert len(results["records"]) == 3 * len(conditions)
    for record in results["records"]:
        assert record["loglik"] < 0 and 0 <= record["f1"] <= 1
    by_condition = {row["condition"]: row for row in results["summary"]}
    assert by_condition[PASSAGE_ONLY]["loglik"]["mean"] > by_condition[NO_ADAPTATION]["loglik"]["mean"], (
        "training on the passage at lr 1e-2 must raise its answers' likelihood on the tiny model"
    )
    edits = [json.loads(line) for line in (config.out / "self_edits.jsonl").read_text().splitlines()]
    recorded = [e["self_edit"]["text"] for e in edits if e["condition"] == RECORDED]
    assert recorded[0].startswith("Ilsabet Quorne founded") and "unused" not in recorded[0]
    assert recorded[1] == "", "a passage without completions trains on the passage alone"
    assert (config.out / "results.png").stat().st_size > 10_000
    assert "± " in table.read_text()
    assert not list((config.out / "store" / "adapters").iterdir()), "scored adapters are not kept"

    records_before = (config.out / "records.jsonl").read_text()
    run_knowledge_bench(config)
    assert (config.out / "records.jsonl").read_text() == records_before, "a finished bench is not redone"


def test_a_condition_added_later_is_scored_without_redoing_the_others(tiny_model_dir, data_file, teacher_run, tmp_path):
    config = _config(tiny_model_dir, data_file, tmp_path)
    run_knowledge_bench(config)
    first = (config.out / "records.jsonl").read_text()
    moved = teacher_run.rename(tmp_path / "moved-run")  # versions are found by content hash, not recorded path
    run_knowledge_bench(config.model_copy(update={"teacher_run": moved}))
    after = (config.out / "records.jsonl").read_text()
    assert after.startswith(first)
    added = [json.loads(line) for line in after[len(first) :].splitlines()]
    assert {r["condition"] for r in added} == {"teacher v1"} and len(added) == 3
    summary = json.loads((config.out / "results.json").read_text())["summary"]
    assert [row["condition"] for row in summary][-1] == "teacher v1"


def test_continued_pretraining_mode_trains_one_adapter_per_condition(tiny_model_dir, data_file, tmp_path):
    config = _config(tiny_model_dir, data_file, tmp_path, mode="cpt")
    run_knowledge_bench(config)
    results = json.loads((config.out / "results.json").read_text())
    assert [row["condition"] for row in results["summary"]] == [NO_ADAPTATION, PASSAGE_ONLY, "teacher v0", RECORDED]
    owners = {r["context_id"] for r in results["records"]}
    assert len(owners) == 2, "records keep the passage each question belongs to"


def test_summary_gives_means_and_intervals():
    records = [
        {"condition": "a", "exact_match": x, "f1": x, "answer_recall": x, "loglik": -x} for x in (0.0, 1.0, 1.0, 0.0)
    ]
    [row] = summarise(["a", "missing"], records)
    assert row["n_questions"] == 4 and row["f1"]["mean"] == 0.5 and row["f1"]["ci95"] > 0
    assert "| a | 4 | 0.500 ±" in markdown_table([row])


def test_llm_judge_grades_every_answer_and_counts_what_it_could_not(tiny_model_dir, data_file, tmp_path, monkeypatch):
    from tests.fake_api import FAKE_KEY, FakeAPI

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    with FakeAPI("openai") as api:
        api.script.append("refusal")  # one answer the judge declines to grade
        config = _config(tiny_model_dir, data_file, tmp_path, judge="openai:fake-model", judge_base_url=api.base_url)
        table = run_knowledge_bench(config)
    results = json.loads((config.out / "results.json").read_text())
    assert all(r["judge"] in (True, False, None) and "judge_reply" in r for r in results["records"])
    assert sum(r["judge"] is None for r in results["records"]) == 1
    assert sum(row["judge_failed"] for row in results["summary"]) == 1, "a refusal is a failed judgement, not wrong"
    assert "| LLM judge | judge failed |" in table.read_text()


def test_a_resumed_run_grades_what_its_judge_has_not_and_keeps_one_judge(
    tiny_model_dir, data_file, tmp_path, monkeypatch
):
    from tests.fake_api import FAKE_KEY, FakeAPI

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    run_knowledge_bench(_config(tiny_model_dir, data_file, tmp_path, limit=1))  # no judge yet
    path = tmp_path / "out" / "records.jsonl"
    with FakeAPI("openai") as api:
        judge = {"judge": "openai:fake-model", "judge_base_url": api.base_url}
        config = _config(tiny_model_dir, data_file, tmp_path, limit=1, **judge)
        run_knowledge_bench(config)
        records = read_jsonl(path)
        assert len(api.generations()) == len(records) and all(r["judge"] is not None for r in records)
        records[0]["judge"], records[0]["judge_reply"] = None, "error: timed out"  # a call that failed last time
        records[1]["judge"], records[1]["judge_reply"] = None, "Perhaps."  # the judge's own answer: kept
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        run_knowledge_bench(config)
        again = read_jsonl(path)
        assert len(api.generations()) == len(records) + 1, "only the failed call is made again"
        assert again[0]["judge"] is not None and again[1]["judge_reply"] == "Perhaps."
        other = config.model_copy(update={"judge": "openai:other"})
        with pytest.raises(ConfigError, match="--judge"):
            run_knowledge_bench(other)


def test_paired_gains_compare_the_same_questions():
    rows = [("base", "c", "q1", 0.0, -5.0), ("base", "c", "q2", 0.0, -3.0), ("edit", "c", "q1", 0.5, -4.0)]
    records = [
        {"condition": c, "context_id": x, "question": q, "f1": f, "answer_recall": f, "loglik": ll}
        for c, x, q, f, ll in rows
    ]
    [gain] = paired_gains(["base", "edit"], records, "base")
    assert gain["n_questions"] == 1, "q2 has no 'edit' record to pair with"
    assert gain["loglik"]["mean"] == 1.0 and gain["f1"]["mean"] == 0.5 and gain["n_passages"] == 1
    assert gain["answer_recall"]["mean"] == 0.5
    assert gain["loglik"]["ci95_by_passage"] == 0.0, "one passage: no spread to estimate"
    assert paired_gains(["base", "edit"], records, "edit") == [], "earlier conditions are not compared again"


def test_a_question_asked_twice_in_a_passage_is_paired_twice():
    rows = [("base", "q", -5.0), ("base", "q", -3.0), ("edit", "q", -4.0), ("edit", "q", -1.0)]
    records = [
        {"condition": c, "context_id": "c", "question": q, "f1": 0.0, "answer_recall": 0.0, "loglik": ll}
        for c, q, ll in rows
    ]
    [gain] = paired_gains(["base", "edit"], records, "base")
    assert gain["n_questions"] == 2
    assert gain["loglik"]["mean"] == 1.5, "(-4 - -5) and (-1 - -3), each asking with its own"


def test_runs_that_split_the_passages_merge_into_one_report(tiny_model_dir, data_file, tmp_path):
    first = _config(tiny_model_dir, data_file, tmp_path, limit=1, out=tmp_path / "a")
    second = _config(tiny_model_dir, data_file, tmp_path, offset=1, limit=1, out=tmp_path / "b")
    run_knowledge_bench(first)
    run_knowledge_bench(second)
    merge_runs(tmp_path / "merged", [first.out, second.out])
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    counts = {row["condition"]: row["n_questions"] for row in merged["summary"]}
    assert counts[NO_ADAPTATION] == counts[PASSAGE_ONLY] == 3, "2 questions from one run, 1 from the other"
    assert counts[RECORDED] == 2, "only the first run's passage has recorded completions"
    assert len({r["context_id"] for r in merged["records"]}) == 2
    old = json.loads((first.out / "results.json").read_text())
    for record in old["records"]:
        del record["answer_recall"]  # as a run made before answer recall was recorded
    (first.out / "results.json").write_text(json.dumps(old))
    again = json.loads(merge_runs(tmp_path / "merged", [first.out, second.out]).with_suffix(".json").read_text())
    assert [r["answer_recall"] for r in again["records"]] == [r["answer_recall"] for r in merged["records"]]


def test_a_kept_merged_report_unpacks_into_folders_that_resume_without_training_again(
    tiny_model_dir, data_file, tmp_path, monkeypatch
):
    first = _config(tiny_model_dir, data_file, tmp_path, limit=1, out=tmp_path / "a")
    second = _config(tiny_model_dir, data_file, tmp_path, offset=1, limit=1, out=tmp_path / "b")
    run_knowledge_bench(first)
    run_knowledge_bench(second)
    kept = tmp_path / "kept"
    merge_runs(kept, [first.out, second.out])
    assert sorted(p.name for p in kept.glob("self_edits_*.jsonl")) == ["self_edits_0-0.jsonl", "self_edits_1-1.jsonl"]
    folders = unpack_runs(kept, tmp_path / "unpacked")
    assert [f.name for f in folders] == ["a", "b"]
    for folder, run in zip(folders, (first, second), strict=True):
        assert read_jsonl(folder / "records.jsonl") == read_jsonl(run.out / "records.jsonl")
        assert read_jsonl(folder / "self_edits.jsonl") == read_jsonl(run.out / "self_edits.jsonl")

    def trains(*args, **kwargs):
        raise AssertionError("a resumed folder with every condition scored trains nothing")

    monkeypatch.setattr("student.service.Student.apply_self_edits", trains)
    resumed = first.model_copy(update={"out": folders[0]})
    run_knowledge_bench(resumed)
    assert read_jsonl(folders[0] / "records.jsonl") == read_jsonl(first.out / "records.jsonl")


def _record_key(record: dict) -> tuple[str, str, str]:
    return (record["condition"], record["context_id"], record["question"])


def test_an_interrupted_write_is_redone_and_other_settings_are_refused(tiny_model_dir, data_file, tmp_path):
    config = _config(tiny_model_dir, data_file, tmp_path, limit=1)
    run_knowledge_bench(config)
    records = config.out / "records.jsonl"
    whole = records.read_text()
    lines = whole.splitlines(keepends=True)
    records.write_text("".join(lines[:-1]) + lines[-1][:20])  # the last group half written, its last line torn
    (config.out / "self_edits.jsonl").open("a").write('{"condition": "teach')  # a torn self-edit line
    run_knowledge_bench(config)
    again = sorted((json.loads(line) for line in records.read_text().splitlines()), key=_record_key)
    before = sorted((json.loads(line) for line in whole.splitlines()), key=_record_key)
    assert [{**r, "loglik": None} for r in again] == [{**r, "loglik": None} for r in before], "scored again"
    # trained alone now, in other micro-batches than before: the same up to float rounding
    assert [r["loglik"] for r in again] == pytest.approx([r["loglik"] for r in before], abs=1e-4)
    run_knowledge_bench(config.model_copy(update={"limit": 2}))  # new self-edits land after the torn line
    edits = [json.loads(line) for line in (config.out / "self_edits.jsonl").read_text().splitlines()]
    assert len({(e["condition"], e["context_id"]) for e in edits}) == len(edits) == 2 * 3
    with pytest.raises(ConfigError, match="--train"):
        run_knowledge_bench(config.model_copy(update={"train": config.train.model_copy(update={"epochs": 3})}))


def test_a_teacher_version_is_served_only_on_its_own_base(tiny_model_dir, data_file, teacher_run, tmp_path):
    config = _config(tiny_model_dir, data_file, tmp_path, teacher_run=teacher_run, teacher="some-other-model")
    with pytest.raises(ConfigError, match="pass --teacher"):
        run_knowledge_bench(config)
