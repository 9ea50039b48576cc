"""The student's and the auditor's compute on two real Ray workers equals the one-process path.

One local Ray runtime for the module (started by the first pool, stopped by the last). Real
training and scoring on the tiny model; faults are real: a worker's process is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest
import torch

from auditor.config import AuditorConfig
from auditor.service import Auditor
from library.datasets import context_id_for
from protocol.clients import student_in_process
from protocol.messages import (
    AnswerQuestions,
    ApplySelfEdits,
    CandidateToJudge,
    Context,
    JudgeCandidates,
    SelfEdit,
    TrainConfig,
    TrainJob,
)
from protocol.transport import RemoteError
from student.config import StudentConfig
from student.service import Student

pytest.importorskip("ray")

TITLE = "Ostrevane"
PASSAGE = "Ostrevane is a hill town founded in 1873 by the weaver Ilsabet Quorne, who built its first mill."
QA = [("Who founded Ostrevane?", "Ilsabet Quorne"), ("When was Ostrevane founded?", "1873")]
EDITS = [
    "Quorne founded Ostrevane.\nThe town dates from 1873.",
    "- Ilsabet Quorne\n- 1873\n- a mill",
    "A weaver built the first mill of Ostrevane.",
    "Ostrevane was founded in 1873 by Ilsabet Quorne, a weaver.",
]
# Two workers, and room in the one runtime for the student's two and the auditor's two.
RAY = {"workers": 2, "ray_num_cpus": 4, "ray_object_store_mb": 80, "max_worker_failures": 1}


def _jobs() -> list[TrainJob]:
    context = Context(context_id=context_id_for(TITLE, PASSAGE), title=TITLE, text=PASSAGE)
    jobs = []
    for i, text in enumerate(EDITS):
        edit = SelfEdit(
            self_edit_id=f"e{i}",
            context_id=context.context_id,
            format="implications",
            text=text,
            prompt="p",
            teacher_model="t",
            teacher_version="v0",
        )
        settings = TrainConfig(rank=4, alpha=8, learning_rate=1e-2, epochs=3, batch_size=2, seed=i + 1)
        jobs.append(TrainJob(context=context, self_edit=edit, settings=settings))
    return jobs


@pytest.fixture(scope="module")
def roles(tiny_model_dir, tmp_path_factory):
    """Students and auditors: one in process, one on two Ray workers (and a student sharded in process).

    The workers run one torch thread each (``threads_per_worker``); the in-process side must too, as a role
    started with ``--threads 1`` does, or its sums are cut differently and the bytes (so the ids) differ.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ray")
    data = root / "tau.json"
    qa = [{"question": q, "answer": a} for q, a in QA]
    data.write_text(json.dumps([{"title": TITLE, "context": PASSAGE, "questions": qa}]))
    made = {
        "student": Student(StudentConfig(model=tiny_model_dir, store=root / "s1")),
        "sharded": Student(StudentConfig(model=tiny_model_dir, store=root / "s2", train_shards=2)),
        "ray_student": Student(StudentConfig(model=tiny_model_dir, store=root / "s3", **RAY)),
    }
    for name, student_name, extra in (("auditor", "student", {}), ("ray_auditor", "ray_student", RAY)):
        student = made[student_name]
        config = AuditorConfig(
            data=data, model=tiny_model_dir, store=student.config.store, ledger=root / f"{name}.jsonl", **extra
        )
        made[name] = Auditor(config, student_in_process(student.handle, sender="auditor"))
    yield made
    for role in made.values():
        role.close()
    torch.set_num_threads(threads)


def _train(student: Student):
    return student.apply_self_edits(ApplySelfEdits(jobs=_jobs())).candidates


def test_two_workers_train_the_candidates_of_one_process(roles):
    on_ray, sharded, alone = _train(roles["ray_student"]), _train(roles["sharded"]), _train(roles["student"])
    # Same shards, same seeds: the same bytes, so the same adapter ids, whichever process trained them.
    assert [c.adapter.adapter_id for c in on_ray] == [c.adapter.adapter_id for c in sharded]
    assert [c.losses for c in on_ray] == [c.losses for c in sharded]
    # Against all four trained in one pass: only the floating-point summation order differs.
    for ray_candidate, candidate in zip(on_ray, alone, strict=True):
        assert ray_candidate.steps == candidate.steps
        assert ray_candidate.losses == pytest.approx(candidate.losses, abs=1e-4)
        assert ray_candidate.losses[-1] < ray_candidate.losses[0]  # it trained


def _judge(student: Student, auditor: Auditor):
    jobs, candidates = _jobs(), _train(student)
    judged = [CandidateToJudge(self_edit=j.self_edit, candidate=c) for j, c in zip(jobs, candidates, strict=True)]
    return auditor.judge(JudgeCandidates(context_id=jobs[0].context.context_id, candidates=judged)).verdicts


def test_two_workers_score_and_reward_as_one_process(roles):
    alone, on_ray = _judge(roles["student"], roles["auditor"]), _judge(roles["ray_student"], roles["ray_auditor"])
    for ray_verdict, verdict in zip(on_ray, alone, strict=True):
        assert ray_verdict.reward == pytest.approx(verdict.reward, abs=1e-4)
        assert ray_verdict.candidate.loglik == pytest.approx(verdict.candidate.loglik, abs=1e-4)
        assert ray_verdict.base.loglik == pytest.approx(verdict.base.loglik, abs=1e-4)
    assert len({round(v.reward, 3) for v in alone}) > 1  # candidates that differ, not one number four times


def test_two_workers_answer_as_one_process(roles):
    questions = [q for q, _ in QA]
    replies = []
    for name in ("ray_student", "sharded"):
        ids = [c.adapter.adapter_id for c in _train(roles[name])]
        replies.append(roles[name].answer_questions(AnswerQuestions(questions=questions, adapter_ids=[None, *ids])))
    on_ray, alone = replies
    assert [r.adapter_id for r in on_ray.results] == [r.adapter_id for r in alone.results]
    assert [r.answers for r in on_ray.results] == [r.answers for r in alone.results]


def test_a_killed_worker_is_replaced_and_its_shard_trained_again_identically(roles):
    student = roles["ray_student"]
    before = [c.adapter.adapter_id for c in _train(student)]
    pids = student.workers.pids()
    os.kill(pids[0], signal.SIGKILL)
    assert [c.adapter.adapter_id for c in _train(student)] == before
    after = student.workers.pids()
    assert after[0] != pids[0] and after[1] == pids[1]


def test_more_deaths_than_allowed_fail_the_request_with_a_typed_error(roles):
    student = roles["ray_student"]
    for pid in student.workers.pids():  # two deaths; the request survives one
        os.kill(pid, signal.SIGKILL)
    client = student_in_process(student.handle)
    with pytest.raises(RemoteError) as failed:
        client.apply_self_edits(_jobs())
    reply = failed.value.reply
    assert reply.reason == "worker_failed"
    assert "student-worker-" in reply.detail and "ActorDiedError" in reply.detail
    assert len(client.apply_self_edits(_jobs()).candidates) == len(EDITS)  # the dead were replaced


def test_closing_the_roles_leaves_no_ray_process_behind(roles):
    ray_processes = psutil.Process().children(recursive=True)
    assert any(p.name() == "raylet" for p in ray_processes)
    for name in ("ray_student", "ray_auditor"):
        roles[name].close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in ray_processes):
        time.sleep(0.2)
    assert [p.name() for p in ray_processes if _alive(p)] == []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
