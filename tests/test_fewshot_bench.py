"""The few-shot student and `seal bench fewshot` end to end on the tiny model (seconds, not minutes)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from apps import fewshot_bench
from apps.cli import main
from apps.fewshot_bench import ORACLE, FewShotBenchConfig, run_fewshot_bench
from auditor.arc_grading import ArcGrader
from library.jsonl import JsonlLog, read_jsonl
from library.ledger import verify_ledger
from library.ledger_signatures import signature_problems
from library.models import load_model
from library.training import IGNORE_INDEX
from protocol.artifacts import ArtifactStore
from protocol.fewshot import ArcPair, ArcTask, FewShotSelfEdit
from protocol.messages import SamplingConfig
from protocol.signing import load_verify_key
from student.fewshot import FewShotStudent
from student.fewshot_config import FewShotStudentConfig
from student.ttt_data import TrainingExample
from teacher.backends import Completion
from teacher.fewshot import EXAMPLE_SELF_EDIT

CHALLENGES = {
    "t1": {
        "train": [
            {"input": [[1, 0]], "output": [[0, 1]]},
            {"input": [[2, 0]], "output": [[0, 2]]},
            {"input": [[3, 0]], "output": [[0, 3]]},
        ],
        "test": [{"input": [[4, 0]]}],
    },
    "big": {"train": [{"input": [[1] * 30] * 30, "output": [[2] * 30] * 30}] * 2, "test": [{"input": [[3] * 30] * 30}]},
    "t2": {
        "train": [{"input": [[1]], "output": [[1, 1]]}, {"input": [[2]], "output": [[2, 2]]}],
        "test": [{"input": [[3]]}, {"input": [[5]]}],
    },
}
SOLUTIONS = {"t1": [[[0, 4]]], "t2": [[[3, 3]], [[5, 5]]], "big": [[[3] * 30] * 30]}
STUDENT = FewShotStudentConfig(max_length=400, max_examples=3, max_epochs=1, views=2, max_new_tokens=12)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a busy machine, thread oversubscription makes these small models ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, "cpu")


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "x_challenges.json").write_text(json.dumps(CHALLENGES))
    (tmp_path / "x_solutions.json").write_text(json.dumps(SOLUTIONS))
    return tmp_path / "x_challenges.json"


def _task(task_id: str) -> ArcTask:
    entry = CHALLENGES[task_id]
    pairs = [ArcPair(**p) for p in entry["train"]]
    return ArcTask(task_id=task_id, train=pairs, test_inputs=[p["input"] for p in entry["test"]])


def test_student_trains_a_stored_adapter_and_answers_every_test_input(tiny, tiny_model_dir, tmp_path):
    model, tokenizer = tiny
    store = ArtifactStore(tmp_path / "store")
    student = FewShotStudent(model, tokenizer, tiny_model_dir, store, STUDENT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = student.train(_task("t2"), ORACLE, {"trained_from": ["x"]})
    assert trained.num_examples == 3 and trained.skipped is None  # 2 leave-one-out tasks, 1 augmented (the cap)
    provenance = store.provenance(trained.adapter.adapter_id)
    assert provenance["self_edit"]["num_train_epochs"] == 1 and provenance["trained_from"] == ["x"]  # clamped from 2
    prediction = student.answer(_task("t2"), trained.adapter.adapter_id)
    assert prediction.adapter_id == trained.adapter.adapter_id and prediction.skipped is None
    assert len(prediction.attempts) == 2 and all(len(a) <= 2 for a in prediction.attempts)
    after = model.state_dict()
    assert set(after) == set(before) and all((after[k] == v).all() for k, v in before.items())  # base untouched


def test_student_skips_tasks_longer_than_its_limit_and_answers_in_context_without_a_self_edit(
    tiny, tiny_model_dir, tmp_path
):
    model, tokenizer = tiny
    student = FewShotStudent(model, tokenizer, tiny_model_dir, ArtifactStore(tmp_path), STUDENT)
    skipped = student.train(_task("big"), ORACLE, {})
    assert skipped.adapter is None and skipped.skipped and "max_length" in skipped.skipped
    assert student.answer(_task("big"), None).attempts == []
    in_context = student.answer(_task("t1"), None)
    assert in_context.adapter_id is None and in_context.num_examples == 0 and len(in_context.attempts) == 1


def test_output_tokens_strategy_puts_the_loss_on_the_answer_only(tiny, tiny_model_dir, tmp_path):
    model, tokenizer = tiny
    student = FewShotStudent(model, tokenizer, tiny_model_dir, ArtifactStore(tmp_path), STUDENT)
    example = TrainingExample(prompt="Input:\n1\nOutput:\n", answer="11", transform="identity")
    outputs = FewShotSelfEdit.model_validate(EXAMPLE_SELF_EDIT.model_dump() | {"strategy": "output_tokens"})
    ids, labels = student._encode(example, outputs)
    answer_len = len(tokenizer("11", add_special_tokens=False)["input_ids"]) + 1  # and EOS
    assert labels[:-answer_len] == [IGNORE_INDEX] * (len(ids) - answer_len)
    assert labels[-answer_len:] == ids[-answer_len:]
    all_ids, all_labels = student._encode(example, outputs.model_copy(update={"strategy": "all_tokens"}))
    assert all_labels == all_ids == ids


def test_bench_runs_every_row_resumes_and_trains_the_teacher_on_kept_self_edits(
    tiny_model_dir, data, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    opts = FewShotBenchConfig(
        out_dir=out,
        model=tiny_model_dir,
        device="cpu",
        train_data=str(data),
        eval_data=str(data),
        train_limit=1,
        eval_limit=2,
        n=1,
        student=STUDENT,
        sampling=SamplingConfig(max_new_tokens=8),
    )
    monkeypatch.setattr(fewshot_bench.TransformersTeacher, "complete", _valid_json)
    solve_t1_until_v1(monkeypatch, out)
    assert run_fewshot_bench(opts) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["row"], r["task_id"]) for r in records} == {
        (row, t) for row in ("in_context", "oracle", "ttt_untrained", "ttt_restem") for t in ("t1", "big")
    }
    assert all(r["skipped"] for r in records if r["task_id"] == "big")
    [version] = json.loads((out / "teacher" / "versions.json").read_text())
    assert version["version"] == "v1" and version["kind"] == "lora" and version["ledger_entry"]
    assert (ArtifactStore(out / "teacher" / "store").path(version["artifact_sha256"]) / "adapter_config.json").exists()
    restem_row = [r for r in records if r["row"] == "ttt_restem" and r.get("proposal")]
    assert {r["proposal"]["teacher_version"] for r in restem_row} == {"v1"}, "the ReST^EM row samples with v1"
    report = verify_ledger(out / "ledger.jsonl")
    assert report.ok and report.entries == 2  # t1's one verdict, then v1
    for ledger in ("ledger.jsonl", "eval-ledger.jsonl"):  # every verdict signed by the bench's auditor key
        assert signature_problems(out / ledger, load_verify_key(out / "keys")) == []
    assert len(read_jsonl(out / "eval-ledger.jsonl")) == 3  # t1 in the oracle, untrained and ReST^EM rows
    summary = json.loads((out / "summary.json").read_text())
    assert [r["row"] for r in summary["rows"]] == ["in_context", "ttt_untrained", "ttt_restem", "oracle"]
    assert "| TTT, self-edits after ReST^EM |" in (out / "results.md").read_text()
    assert (out / "solved.png").stat().st_size > 0

    monkeypatch.setattr(fewshot_bench, "_attempt", _must_not_run)  # everything is recorded: a rerun only reports
    monkeypatch.setattr(FewShotStudent, "train", _must_not_run)
    assert run_fewshot_bench(opts) == 0
    assert verify_ledger(out / "ledger.jsonl").entries == 2, "a finished run adds nothing to the ledger"


def solve_t1_until_v1(monkeypatch, out: Path) -> None:
    """Grade t1 as solved until the teacher has a version: as if the untrained teacher's self-edit solved it."""
    real_grade = ArcGrader.grade

    def grade(self, prediction):
        result = real_grade(self, prediction)
        if prediction.task_id == "t1" and not (out / "teacher" / "versions.json").exists():
            return result.model_copy(update={"solved": True, "correct": [True] * len(result.correct)})
        return result

    monkeypatch.setattr(ArcGrader, "grade", grade)


def test_bench_without_kept_self_edits_marks_the_restem_row_not_run(tiny_model_dir, data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(fewshot_bench.TransformersTeacher, "complete", _valid_json)
    flags = "--train-limit 1 --eval-limit 1 --n 1 --max-length 400 --max-examples 2 --max-epochs 1 --views 1"
    argv = ["bench", "fewshot", "--out", str(out), "--model", tiny_model_dir, "--device", "cpu"]
    argv += ["--train-data", str(data), "--eval-data", str(data), *flags.split()]
    assert main(argv) == 0
    table = (out / "results.md").read_text()
    assert "not run: ReST^EM kept nothing" in table
    assert len((out / "records.jsonl").read_text().splitlines()) == 3  # three rows for the one evaluation task
    [version] = json.loads((out / "teacher" / "versions.json").read_text())
    assert version["version"] == "v1" and version["kind"] == "base", "nothing kept: v1 is the untrained teacher"
    report = verify_ledger(out / "ledger.jsonl")
    assert report.ok and report.entries == 1  # the one graded sample, unsolved; no teacher_version


def test_bench_records_survive_a_torn_last_line_and_the_cut_result_is_made_again(tmp_path, monkeypatch, caplog):
    path = tmp_path / "records.jsonl"
    done = {"row": "oracle", "task_id": "t1", "solved": True, "seconds": 1.0}
    path.write_text(json.dumps(done) + "\n" + '{"row": "oracle", "task_id": "t2", "sol')  # killed mid-write
    monkeypatch.setattr(fewshot_bench, "_attempt", lambda *args, **kwargs: {"solved": False, "seconds": 0.0})
    student = SimpleNamespace(solver=SimpleNamespace(too_long=lambda task: None))  # every task fits
    records, restem = JsonlLog(path), JsonlLog(tmp_path / "restem.jsonl")
    bench = fewshot_bench._Bench(opts=None, student=student, teacher=None, records=records, restem=restem)
    with caplog.at_level(logging.WARNING, logger="library.jsonl"):
        fewshot_bench._run_row(bench, "oracle", [_task("t1"), _task("t2")], peers=None, fixed=ORACLE)
    assert "dropped its last line" in caplog.text
    assert [(r["task_id"], r["solved"]) for r in read_jsonl(path)] == [("t1", True), ("t2", False)]


def _valid_json(self, prompts, n, sampling):
    return [[Completion(EXAMPLE_SELF_EDIT.model_dump_json()) for _ in range(n)] for _ in prompts]


def _must_not_run(*args, **kwargs):
    raise AssertionError("a recorded result was computed again")
