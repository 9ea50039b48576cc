"""Few-shot ReST^EM through the one driver and the services: signed verdicts and teacher versions that verify."""

from __future__ import annotations

import json

import pytest
import torch

from auditor.arc_grading import ArcGrader
from auditor.fewshot_config import FewShotAuditorConfig
from auditor.fewshot_service import FewShotAuditor
from library.jsonl import JsonlLog
from library.ledger import verify_ledger
from library.ledger_signatures import signature_problems
from protocol.artifacts import pairs_sha256
from protocol.fewshot import FewShotProposal
from protocol.fewshot_clients import fewshot_auditor_in_process, fewshot_student_in_process
from protocol.messages import RecordTeacherVersion, SamplingConfig, VersionExample
from protocol.signing import create_signing_key, load_signing_key, load_verify_key
from protocol.transport import RemoteError
from student.fewshot_config import FewShotStudentServiceConfig
from student.fewshot_service import FewShotStudentService
from teacher.backends import TransformersTeacher
from teacher.fewshot_restem import FewShotDomain, FewShotPeers, FewShotSampling
from teacher.m_step import MStepConfig
from teacher.restem import run_rounds
from teacher.sft import SFTConfig
from teacher.versions import VersionBook
from tests.test_fewshot_bench import CHALLENGES, SOLUTIONS, STUDENT, _task, _valid_json


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as in the bench's tests: oversubscription makes the tiny model far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_fewshot_restem_round_records_a_version_only_its_solving_verdicts_back(tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "x_challenges.json").write_text(json.dumps(CHALLENGES))
    (tmp_path / "x_solutions.json").write_text(json.dumps(SOLUTIONS))
    create_signing_key(tmp_path)
    monkeypatch.setattr(TransformersTeacher, "complete", _valid_json)
    real_grade = ArcGrader.grade
    monkeypatch.setattr(ArcGrader, "grade", lambda self, p: real_grade(self, p).model_copy(update={"solved": True}))
    teacher = TransformersTeacher(tiny_model_dir, device="cpu")
    student = FewShotStudentService(
        FewShotStudentServiceConfig(model=tiny_model_dir, device="cpu", store=tmp_path / "store", ttt=STUDENT)
    )
    config = FewShotAuditorConfig(
        data=str(tmp_path / "x_challenges.json"), model=tiny_model_dir, store=tmp_path / "store", ledger=tmp_path / "l"
    )
    auditor = FewShotAuditor(config, fewshot_student_in_process(student.handle, "auditor"), load_signing_key(tmp_path))
    peers = FewShotPeers(fewshot_student_in_process(student.handle), fewshot_auditor_in_process(auditor.handle))
    sampling = FewShotSampling(n=2, sampling=SamplingConfig(max_new_tokens=8), max_attempts=1)
    domain = FewShotDomain(teacher, peers, JsonlLog(tmp_path / "restem.jsonl"), [_task("t1")], sampling)
    m_step = MStepConfig(SFTConfig(rank=4, alpha=8, epochs=1, max_length=256), device="cpu")
    [summary] = run_rounds(domain, teacher, VersionBook(tmp_path), peers.auditor, 1, 0.0, m_step)

    assert summary.sampled_by == "v0" and len(summary.kept) == 2, "every solved self-edit is kept"
    assert summary.made.version == "v1" and summary.made.kind == "lora"
    entries = [json.loads(line) for line in (tmp_path / "l").read_text().splitlines()]
    assert [e["kind"] for e in entries] == ["verdict", "verdict", "teacher_version"]
    [recorded] = json.loads((tmp_path / "teacher" / "versions.json").read_text())
    assert recorded["ledger_entry"] == entries[2]["hash"]
    cited = {entry for example in entries[2]["record"]["examples"] for entry in example["verdict_entries"]}
    assert cited == {entries[0]["hash"], entries[1]["hash"]}
    assert verify_ledger(tmp_path / "l").ok and signature_problems(tmp_path / "l", load_verify_key(tmp_path)) == []

    monkeypatch.setattr(ArcGrader, "grade", real_grade)  # the next self-edit really fails the task
    proposal = FewShotProposal.model_validate(domain.log.records[0]["samples"][0]["proposal"])
    unsolved = proposal.model_copy(update={"proposal_id": "p-unsolved", "teacher_version": "v1"})
    tried = FewShotDomain.try_proposal(peers, _task("t1"), unsolved)
    assert tried["verdict"]["accepted"] is False and tried["reward"] == 0.0
    example = VersionExample(
        context_id="t1", self_edit_id="p-unsolved", reward=1.0, verdict_entries=[tried["verdict_entry"]]
    )
    claim = RecordTeacherVersion(
        version="v2",
        round=1,
        kind="lora",
        teacher_model="tiny",
        artifact_sha256="cd" * 32,
        data_sha256=pairs_sha256([(proposal.prompt, tried["verdict"]["self_edit_sha256"])]),
        examples=[example],
    )
    with pytest.raises(RemoteError, match="rejected"):
        peers.auditor.record_teacher_version(claim)
    auditor.close()
