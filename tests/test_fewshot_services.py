"""The few-shot services over in-process links (every message through the codec), on the tiny model.

The split of the grids is checked twice: on the types (no field that reaches the student or the teacher
can hold a test output) and on the traffic (no answer grid is in any request the student received or
any reply the teacher received). Verdicts are signed and verify with ``seal ledger verify --keys``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from apps.cli import main
from auditor.fewshot_config import FewShotAuditorConfig
from auditor.fewshot_service import FewShotAuditor
from library.jsonl import JsonlLog
from protocol.fewshot import FewShotProposal
from protocol.fewshot_clients import fewshot_auditor_in_process, fewshot_student_in_process
from protocol.fewshot_messages import FewShotAuditorReply, FewShotStudentRequest, TaskTrained, TrainTask, TTTCandidate
from protocol.messages import Body, SamplingConfig, SelfEdit
from protocol.signing import create_signing_key, load_signing_key
from protocol.transport import RemoteError
from student.fewshot_config import FewShotStudentServiceConfig
from student.fewshot_service import FewShotStudentService
from teacher.backends import Completion
from teacher.fewshot import EXAMPLE_SELF_EDIT, as_self_edit
from teacher.fewshot_restem import FewShotDomain, FewShotPeers, FewShotSampling
from tests.test_fewshot_bench import CHALLENGES, STUDENT, _task

SOLUTIONS = {"t1": [[[0, 4]]], "t2": [[[3, 3]], [[5, 5]]], "big": [[[4] * 30] * 30]}
"""The answer grids: none of them is a demonstration or a test input, so none may be seen outside the auditor."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recorder:
    """A service handler that keeps every request it was given and every reply it gave."""

    def __init__(self, handler):
        self.handler, self.requests, self.replies = handler, [], []

    def __call__(self, body: Body) -> Body:
        self.requests.append(body)
        reply = self.handler(body)
        self.replies.append(reply)
        return reply


class JsonTeacher:
    """A teacher backend whose every completion is the example self-edit (the tiny model writes no JSON)."""

    model_id, version_kind = "json-teacher", "lora"

    def complete(self, prompts, n, sampling):
        return [[Completion(EXAMPLE_SELF_EDIT.model_dump_json()) for _ in range(n)] for _ in prompts]


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    """The student service, an auditor signing into its ledger, and the teacher's recorded links to both."""
    root = tmp_path_factory.mktemp("fewshot")
    (root / "x_challenges.json").write_text(json.dumps(CHALLENGES))
    (root / "x_solutions.json").write_text(json.dumps(SOLUTIONS))
    create_signing_key(root)
    config = FewShotStudentServiceConfig(model=tiny_model_dir, device="cpu", store=root / "store", ttt=STUDENT)
    student = Recorder(FewShotStudentService(config).handle)
    auditor = _auditor(root, tiny_model_dir, student, load_signing_key(root), "ledger.jsonl")
    to_student, to_auditor = Recorder(student), Recorder(auditor.handle)  # what the teacher sends and receives
    peers = FewShotPeers(fewshot_student_in_process(to_student), fewshot_auditor_in_process(to_auditor))
    domain = FewShotDomain(JsonTeacher(), peers, JsonlLog(root / "log.jsonl"), [_task(t) for t in CHALLENGES], _ONE)
    records = {r["task_id"]: r for r in domain.sample_tasks(0, "v0")}
    teacher = [to_student, to_auditor]
    return {
        "root": root,
        "student": student,
        "auditor": auditor,
        "peers": peers,
        "records": records,
        "teacher": teacher,
    }


_ONE = FewShotSampling(n=1, sampling=SamplingConfig(max_new_tokens=8), max_attempts=1)


def _auditor(root, model, student, key, ledger) -> FewShotAuditor:
    data = str(root / "x_challenges.json")
    config = FewShotAuditorConfig(data=data, model=model, store=root / "store", ledger=root / ledger)
    return FewShotAuditor(config, fewshot_student_in_process(student, "auditor"), key)


def _grids(value: Any) -> list:
    """Every grid (a list of lists of ints) anywhere in a JSON value."""
    if isinstance(value, dict):
        return [g for v in value.values() for g in _grids(v)]
    if isinstance(value, list):
        is_grid = value and all(isinstance(row, list) and all(isinstance(c, int) for c in row) for row in value)
        return [value] if is_grid else [g for v in value for g in _grids(v)]
    return []


def test_a_pass_trains_judges_and_signs_and_the_grids_never_leave_the_auditor(world, capsys):
    records, root = world["records"], world["root"]
    [t1], [t2], [big] = (records[t]["samples"] for t in ("t1", "t2", "big"))
    assert big["skipped"] and "max_length" in big["skipped"] and "verdict" not in big
    for sample in (t1, t2):
        verdict = sample["verdict"]
        assert verdict["metric"] == "arc_exact" and verdict["signature"] and verdict["reward"] in (0.0, 1.0)
        assert verdict["candidate"]["n_questions"] == len(CHALLENGES[sample["candidate"]["task_id"]]["test"])
    assert main(["ledger", "verify", "--ledger", str(root / "ledger.jsonl"), "--keys", str(root)]) == 0
    assert "2 entries" in capsys.readouterr().out

    answers = {json.dumps(grid) for grids in SOLUTIONS.values() for grid in grids}
    to_student, to_auditor = world["teacher"]
    student_saw = [body.model_dump(mode="json") for body in world["student"].requests]
    teacher_got = [body.model_dump(mode="json") for body in to_student.replies + to_auditor.replies]
    assert {type(b).__name__ for b in world["student"].requests} == {"TrainTask", "AnswerTask"}
    assert {type(b).__name__ for b in to_auditor.replies} == {"Verdicts"}
    seen = {json.dumps(grid) for body in student_saw + teacher_got for grid in _grids(body)}
    assert seen and not seen & answers, "an answer grid reached the student or the teacher"


def test_a_self_edit_is_judged_once_and_in_context_grades_are_not_recorded(world):
    peers, auditor = world["peers"], world["auditor"]
    sample = world["records"]["t1"]["samples"][0]
    edit, candidate = _edit_and_candidate(sample)
    before = auditor.ledger.count
    [again] = peers.auditor.judge_task("t1", edit, candidate).verdicts
    assert again.ledger_entry == sample["verdict_entry"] and auditor.ledger.count == before
    grade = peers.auditor.grade_in_context("t2").grade
    assert grade.task_id == "t2" and len(grade.correct) == 2 and auditor.ledger.count == before


def test_the_auditor_refuses_an_adapter_judged_for_another_self_edit_or_task(world):
    peers = world["peers"]
    edit, candidate = _edit_and_candidate(world["records"]["t1"]["samples"][0])
    other_text = EXAMPLE_SELF_EDIT.model_copy(update={"permute_colors": False}).model_dump_json()
    other_edit = edit.model_copy(update={"text": other_text})
    [v] = peers.auditor.judge_task("t1", other_edit, candidate).verdicts
    assert not v.accepted and "not trained on the self-edit" in v.reason and v.signature
    [v] = peers.auditor.judge_task("t2", edit, candidate.model_copy(update={"task_id": "t2"})).verdicts
    assert not v.accepted and "was not trained on task t2" in v.reason
    with pytest.raises(RemoteError, match="no answer grids held for task nope"):
        peers.auditor.judge_task("nope", edit, candidate)
    too_many = edit.model_copy(update={"text": json.dumps(EXAMPLE_SELF_EDIT.model_dump() | {"num_train_epochs": 99})})
    with pytest.raises(ValidationError):  # a client cannot even build such a request
        peers.student.train_task(_task("t1"), too_many)
    forged = TrainTask.model_construct(task=_task("t1"), self_edit=too_many)  # sent anyway, unchecked
    with pytest.raises(RemoteError, match="num_train_epochs"):  # refused when the student decodes it
        peers.student.link.call(forged)


def test_an_unsigned_fewshot_ledger_fails_verification_with_keys(world, capsys):
    root = world["root"]
    unsigned = _auditor(root, world["auditor"].config.model, world["student"], None, "unsigned.jsonl")
    edit, candidate = _edit_and_candidate(world["records"]["t1"]["samples"][0])
    fewshot_auditor_in_process(unsigned.handle).judge_task("t1", edit, candidate)
    unsigned.close()
    assert main(["ledger", "verify", "--ledger", str(root / "unsigned.jsonl"), "--keys", str(root)]) != 0
    assert "not signed" in capsys.readouterr().out


def test_no_field_that_reaches_the_student_or_the_teacher_can_hold_a_test_output():
    """Grid-typed fields reachable from the student's requests and the teacher's replies: demonstrations,
    test inputs and the student's own attempts; a test output field would show up here."""
    teacher_gets = TypeAdapter(FewShotAuditorReply).json_schema()["$defs"] | TaskTrained.model_json_schema().get(
        "$defs", {}
    )
    student_gets = TypeAdapter(FewShotStudentRequest).json_schema()["$defs"]
    assert _grid_fields(student_gets) == {"ArcPair.input", "ArcPair.output", "ArcTask.test_inputs"}
    assert _grid_fields(teacher_gets) == set()


def _grid_fields(defs: dict[str, Any]) -> set[str]:
    def is_grid(schema: dict[str, Any]) -> bool:
        items = schema.get("items", {})
        return schema.get("type") == "array" and items.get("type") == "array" and "integer" in json.dumps(items)

    found = set()
    for name, model in defs.items():
        for field, schema in model.get("properties", {}).items():
            if is_grid(schema) or (schema.get("type") == "array" and is_grid(schema.get("items", {}))):
                found.add(f"{name}.{field}")
    return found


def _edit_and_candidate(sample: dict[str, Any]) -> tuple[SelfEdit, TTTCandidate]:
    """The self-edit and the candidate of one logged sample, as the teacher sent them."""
    edit = as_self_edit(FewShotProposal.model_validate(sample["proposal"]))
    return edit, TTTCandidate.model_validate(sample["candidate"])
