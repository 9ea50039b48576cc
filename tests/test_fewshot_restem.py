"""Few-shot ReST^EM through the one driver: the auditor's verdicts and teacher versions in a verified ledger."""

from __future__ import annotations

import json

import pytest
import torch

from apps.fewshot_restem import FewShotDomain, FewShotSampling
from auditor.arc_auditor import ArcAuditor
from auditor.arc_grading import ArcGrader
from library.jsonl import JsonlLog
from library.ledger import Ledger, verify_ledger
from library.models import load_model
from protocol.artifacts import pairs_sha256
from protocol.codec import ProtocolError
from protocol.fewshot import ArcPrediction, FewShotProposal
from protocol.messages import RecordTeacherVersion, SamplingConfig, VersionExample
from student.fewshot import FewShotStudent
from teacher.backends import TransformersTeacher
from teacher.fewshot import EXAMPLE_SELF_EDIT, completion_text
from teacher.m_step import MStepConfig
from teacher.restem import run_rounds
from teacher.sft import SFTConfig
from teacher.versions import VersionBook
from tests.test_fewshot_bench import SOLUTIONS, STUDENT, _task, _valid_json

ANSWER = SOLUTIONS["t1"][0]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as in the bench's tests: oversubscription makes the tiny model far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, "cpu")


def _proposal(slot: int) -> FewShotProposal:
    return FewShotProposal(
        proposal_id=f"p{slot}",
        task_id="t1",
        self_edit=EXAMPLE_SELF_EDIT,
        completions=[completion_text(EXAMPLE_SELF_EDIT)],
        prompt="Choose the training configuration.",
        teacher_model="tiny",
        teacher_version="v0",
    )


def _prediction(grid: list[list[int]]) -> ArcPrediction:
    return ArcPrediction(task_id="t1", attempts=[[grid]], votes=[[1]], adapter_id="ab" * 32)


def _request(proposal: FewShotProposal, entry: str) -> RecordTeacherVersion:
    example = VersionExample(context_id="t1", self_edit_id=proposal.proposal_id, reward=1.0, verdict_entries=[entry])
    return RecordTeacherVersion(
        version="v1",
        round=0,
        kind="lora",
        teacher_model="tiny",
        artifact_sha256="cd" * 32,
        data_sha256=pairs_sha256([(proposal.prompt, completion_text(EXAMPLE_SELF_EDIT))]),
        examples=[example],
    )


def test_the_arc_auditor_grades_into_its_ledger_and_records_only_versions_its_verdicts_back(tmp_path):
    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        auditor = ArcAuditor(ArcGrader({"t1": [ANSWER]}), ledger, "tiny")
        solved, unsolved = _proposal(0), _proposal(1)
        text = completion_text(EXAMPLE_SELF_EDIT)
        good = auditor.judge(solved, text, _prediction(ANSWER))
        bad = auditor.judge(unsolved, text, _prediction([[9, 9]]))
        assert (good.grade.solved, good.reward, bad.grade.solved, bad.reward) == (True, 1.0, False, 0.0)
        assert auditor.judge(solved, text, _prediction([[9, 9]])) == good, "a self-edit is judged once"
        with pytest.raises(ValueError, match="not the self-edit"):
            auditor.judge(_proposal(2), text.replace("true", "false", 1), _prediction(ANSWER))
        with pytest.raises(ProtocolError, match="rejected"):
            auditor.record_teacher_version(_request(unsolved, bad.ledger_entry))
        recorded = auditor.record_teacher_version(_request(solved, good.ledger_entry))
    [verdict, _, version] = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert verdict["record"]["verdict"] | {"reason": ""} == {
        "context_id": "t1",
        "self_edit_id": "p0",
        "adapter_id": "ab" * 32,
        "accepted": True,
        "metric": "arc_exact",
        "reward": 1.0,
        "vetoes": [],
        "reason": "",
    }
    assert version["kind"] == "teacher_version" and version["hash"] == recorded.ledger_entry
    assert verify_ledger(tmp_path / "ledger.jsonl").ok


def test_a_fewshot_restem_round_writes_verdicts_and_a_teacher_version_that_verify(
    tiny, tiny_model_dir, tmp_path, monkeypatch
):
    model, tokenizer = tiny
    monkeypatch.setattr(TransformersTeacher, "complete", _valid_json)
    real_grade = ArcGrader.grade
    monkeypatch.setattr(ArcGrader, "grade", lambda self, p: real_grade(self, p).model_copy(update={"solved": True}))
    teacher = TransformersTeacher(tiny_model_dir, device="cpu")
    student = FewShotStudent(model, tokenizer, tiny_model_dir, STUDENT)
    sampling = FewShotSampling(n=2, sampling=SamplingConfig(max_new_tokens=8), max_attempts=1)
    book = VersionBook(tmp_path)
    m_step = MStepConfig(SFTConfig(rank=4, alpha=8, epochs=1, max_length=256), device="cpu")
    with Ledger(tmp_path / "ledger.jsonl") as ledger:
        auditor = ArcAuditor(ArcGrader(SOLUTIONS), ledger, tiny_model_dir)
        domain = FewShotDomain(teacher, student, auditor, JsonlLog(tmp_path / "restem.jsonl"), [_task("t1")], sampling)
        [summary] = run_rounds(domain, teacher, book, auditor, 1, 0.0, m_step)
    assert summary.sampled_by == "v0" and len(summary.kept) == 2, "every solved self-edit is kept"
    assert summary.made.version == "v1" and summary.made.kind == "lora"
    entries = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in entries] == ["verdict", "verdict", "teacher_version"]
    [recorded] = json.loads((tmp_path / "teacher" / "versions.json").read_text())
    assert recorded["ledger_entry"] == entries[2]["hash"]
    cited = {entry for example in entries[2]["record"]["examples"] for entry in example["verdict_entries"]}
    assert cited == {entries[0]["hash"], entries[1]["hash"]}
    assert verify_ledger(tmp_path / "ledger.jsonl").ok
