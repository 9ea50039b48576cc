"""Continual adaptation on the tiny model, real training: on top of the served stack, judged against it, guarded.

Each passage is a question prompt followed by its answer, so training teaches the tiny model to answer it right
(answer recall 1): what a served adapter taught, a candidate on top of it must keep.
"""

from __future__ import annotations

import json

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.config import AuditorConfig
from auditor.grading import answer_recall
from auditor.service import Auditor
from library.datasets import context_id_for
from library.jsonl import append_jsonl
from library.lora import adapters_loaded
from library.qa_format import question_prompt
from protocol.artifacts import REHEARSED, self_edit_sha256
from protocol.clients import auditor_in_process, student_in_process
from protocol.codec import ProtocolError
from protocol.messages import (
    AnswerQuestions,
    ApplySelfEdits,
    CandidateToJudge,
    Context,
    JudgeCandidates,
    Promote,
    Rollback,
    SelfEdit,
    TrainConfig,
    TrainJob,
)
from student.answering import generate_answers
from student.config import StudentConfig
from student.service import Student
from teacher.loop import Outcome, run_pass

# One question a passage: the tiny model learns an answer only at the start of a sequence, where it is asked.
QA_A = [("Who founded Ostrevane?", "Quorne")]
QA_B = [("What does Pell Harrow export?", "slate")]
WRONG_A = [(q, "zq xv") for q, _ in QA_A]  # the destroyer's passage: A's question answered wrong, then B's
# Rates measured on training seeds 0-11 (the tiny model is sensitive to them; machines' numerics differ): at 1e-2
# every seed learns A (at 2e-2 some diverge); on top of A, 1e-3 learns B and keeps A for all twelve (1.5e-3 forgets
# A for two, 3e-3 for most), so both sit well inside the range that works.
SETTINGS = TrainConfig(rank=16, alpha=32, learning_rate=1e-2, epochs=80, batch_size=4, max_length=512, seed=0)
GENTLE = SETTINGS.model_copy(update={"learning_rate": 1e-3})  # on top of A: learns B, keeps A (SETTINGS forgets A)
QUICK = SETTINGS.model_copy(update={"epochs": 1})  # where what is learned does not matter
KEY = Ed25519PrivateKey.generate()


def _passage(tokenizer, pairs) -> str:
    return "".join(question_prompt(tokenizer, q, "") + a + "\n" for q, a in pairs)


def _context(title: str, text: str) -> Context:
    return Context(context_id=context_id_for(title, text), title=title, text=text)


def _edit(context: Context, text: str = "") -> SelfEdit:
    return SelfEdit(
        self_edit_id=f"e-{context.context_id[:8]}-{abs(hash(text)) % 10**6}",
        context_id=context.context_id,
        format="implications",
        text=text,
        prompt="p",
        teacher_model="t",
        teacher_version="v0",
    )


@pytest.fixture(scope="module")
def roles(tiny_model_dir, tmp_path_factory):
    """A student (holding the auditor's verify key), an auditor with τ for A, B and a destroyer of A, contexts."""
    root = tmp_path_factory.mktemp("continual")
    student = Student(StudentConfig(model=tiny_model_dir, store=root / "store"), verify_key=KEY.public_key())
    tok = student.tokenizer
    contexts = {
        "A": _context("Ostrevane", _passage(tok, QA_A)),
        "B": _context("Pell Harrow", _passage(tok, QA_B)),
        "destroyer": _context("Pell Harrow", _passage(tok, WRONG_A + QA_B)),  # B's facts, A's answers overwritten
    }
    qa = {"A": QA_A, "B": QA_B, "destroyer": QA_B}
    data = root / "tau.json"
    data.write_text(
        json.dumps(
            [
                {"title": c.title, "context": c.text, "questions": [{"question": q, "answer": a} for q, a in qa[k]]}
                for k, c in contexts.items()
            ]
        )
    )
    retention = root / "retention.json"
    retention.write_text(json.dumps([{"question": "What is the capital of France?", "answer": "Paris"}]))
    config = AuditorConfig(
        data=data,
        retention=retention,
        model=tiny_model_dir,
        store=root / "store",
        ledger=root / "ledger.jsonl",
        probes=root / "no-probes.json",
        metric="answer_recall",
        min_gain=0.5,
        max_retention_drop=50.0,
        max_earlier_drop=0.2,
        answer_instruction="",  # the passages teach the answers after the bare question
        answer_tokens=12,
    )
    config.probes.write_text("[]")
    auditor = Auditor(config, student_in_process(student.handle, sender="auditor"), signing_key=KEY)
    return student, auditor, contexts


def _train(student: Student, context: Context, on_top_of: list[str], text: str = "", rehearsal=(), settings=GENTLE):
    edit = _edit(context, text)
    job = TrainJob(context=context, self_edit=edit, settings=settings, on_top_of=on_top_of, rehearsal=list(rehearsal))
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[job])).candidates[0]
    return CandidateToJudge(self_edit=edit, candidate=candidate)


def _judge(auditor: Auditor, item: CandidateToJudge):
    return auditor.judge(JudgeCandidates(context_id=item.self_edit.context_id, candidates=[item])).verdicts[0]


def _right(answers: list[str], pairs) -> int:
    return sum(int(answer_recall(a, [gold])) for a, (_, gold) in zip(answers, pairs, strict=True))


@pytest.fixture(scope="module")
def served_a(roles):
    """A's candidate, trained on the base, accepted and promoted: the served stack is [A]."""
    student, auditor, contexts = roles
    item = _train(student, contexts["A"], [], settings=SETTINGS)
    verdict = _judge(auditor, item)
    assert verdict.accepted, verdict.reason
    student.served.promote(Promote(adapter_id=verdict.adapter_id, verdict=verdict))
    return item, verdict


@pytest.fixture(scope="module")
def b_on_a(roles, served_a):
    """B's candidate, trained on top of the served stack [A]."""
    student, _, contexts = roles
    return _train(student, contexts["B"], [served_a[1].adapter_id])


def test_a_candidate_on_top_of_the_served_adapter_has_its_effect_and_its_own(roles, served_a, b_on_a):
    student, _, _ = roles
    a, b = served_a[1].adapter_id, b_on_a.candidate.adapter.adapter_id
    questions = [q for q, _ in QA_A + QA_B]
    weights = {name: w.clone() for name, w in student.model.state_dict().items()}
    on_base = student.answer_questions(
        AnswerQuestions(questions=questions, adapter_ids=[None], max_new_tokens=12, instruction="")
    )
    on_a = student.answer_questions(
        AnswerQuestions(questions=questions, adapter_ids=[None, b], max_new_tokens=12, instruction="", stack=[a])
    )
    base, stack, stacked = on_base.results[0].answers, on_a.results[0].answers, on_a.results[1].answers
    assert all(torch.equal(w, weights[name]) for name, w in student.model.state_dict().items())  # merge undone
    assert _right(base[:1], QA_A) == 0 and _right(base[1:], QA_B) == 0  # the base knows neither passage
    assert _right(stack[:1], QA_A) == 1 and _right(stack[1:], QA_B) == 0  # A alone: A's answer
    assert _right(stacked[:1], QA_A) == 1 and _right(stacked[1:], QA_B) == 1  # B on top of A: both
    # What promoting B would serve (peft, both adapters active, unmerged: the served model's way) answers the same.
    folders = {x: student.store.path(x) for x in (a, b)}
    with adapters_loaded(student.model, folders) as peft_model:
        peft_model.base_model.set_adapter([a, b])
        assert generate_answers(peft_model, student.tokenizer, questions, 12, instruction="") == stacked


def test_the_auditor_judges_against_the_served_stack_and_refuses_a_candidate_trained_on_the_base(
    roles, served_a, b_on_a
):
    student, auditor, contexts = roles
    verdict = _judge(auditor, b_on_a)
    assert verdict.accepted and "earlier passages' largest drop 0.00" in verdict.reason, verdict.reason
    entry = auditor.ledger.find(adapter_id=verdict.adapter_id)[-1]["record"]
    # "before" is the stack [A]: it answers A's question right (the base model does not), and B's as the stack does.
    assert entry["earlier"] == [
        {"context_id": contexts["A"].context_id, "questions": 1, "before_right": 1, "candidate_right": 1, "drop": 0.0}
    ]
    questions = [q for q, _ in QA_B]
    request = AnswerQuestions(
        questions=questions, adapter_ids=[None], max_new_tokens=12, instruction="", stack=[served_a[1].adapter_id]
    )
    stack_answers = student.answer_questions(request).results[0]
    assert [row["base_answer"] for row in entry["per_question"]] == stack_answers.answers
    on_base = _judge(auditor, _train(student, contexts["B"], [], "Pell Harrow exports slate.", settings=QUICK))
    assert not on_base.accepted and "trained on top of the base model" in on_base.reason


def test_a_candidate_that_destroys_an_earlier_passage_is_rejected_with_the_reason_in_the_ledger(roles, served_a):
    student, auditor, contexts = roles
    verdict = _judge(auditor, _train(student, contexts["destroyer"], [served_a[1].adapter_id], settings=SETTINGS))
    assert not verdict.accepted
    assert verdict.earlier_drop == 1.0
    recorded = auditor.ledger.find(adapter_id=verdict.adapter_id)[-1]["record"]
    assert f"earlier passage {contexts['A'].context_id[:12]} answer recall dropped by 1.00 > 0.2" in recorded["reason"]
    assert "right 1/1 → 0/1" in recorded["reason"]


def test_rehearsal_mixes_earlier_accepted_self_edits_into_training_and_only_accepted_ones(roles, served_a):
    student, auditor, contexts = roles
    accepted, stack = served_a[0].self_edit, [served_a[1].adapter_id]
    altered = accepted.model_copy(update={"text": "Ilsabet Quorne founded Ostrevane.\nShe wove."})
    mixed = _train(student, contexts["B"], stack, "Pell Harrow exports slate.", [altered], settings=QUICK)
    assert mixed.candidate.num_sequences == 1 + 1 + 2  # the passage, its own line, the rehearsed self-edit's lines
    assert student.store.provenance(mixed.candidate.adapter.adapter_id)[REHEARSED] == [self_edit_sha256(altered)]
    verdict = _judge(auditor, mixed)  # the altered text was never accepted (A's own self-edit was)
    assert not verdict.accepted and "never accepted" in verdict.reason
    fine = _train(student, contexts["B"], stack, "Pell Harrow exports slate.", [accepted], settings=QUICK)
    assert "never accepted" not in _judge(auditor, fine).reason


def test_run_pass_rehearses_the_configured_number_of_earlier_accepted_self_edits(roles, served_a, tmp_path):
    student, auditor, contexts = roles
    item, verdict = served_a
    # A finished earlier in this run: two accepted self-edits (one only in this record) and one rejected.
    edits = [item.self_edit, *(_edit(contexts["A"], text) for text in ("Quorne founded it.", "It is old."))]
    verdicts = [verdict, *(verdict.model_copy(update={"self_edit_id": e.self_edit_id}) for e in edits[1:])]
    verdicts[2] = verdicts[2].model_copy(update={"accepted": False})
    (tmp_path / "run").mkdir()
    append_jsonl(tmp_path / "run" / "results.jsonl", Outcome(contexts["A"], edits, verdicts).to_record())
    proposed = _edit(contexts["B"], "Pell Harrow exports slate.")
    student.served.rollback(Rollback(to="base"))  # nothing served: the pass trains and judges on the base
    try:
        outcomes = run_pass(
            [contexts["A"], contexts["B"]],
            lambda context: [proposed],
            student_in_process(student.handle),
            auditor_in_process(auditor.handle),
            tmp_path / "run",
            settings=[QUICK],
            rehearsal=(1, 0),
        )
    finally:
        student.served.promote(Promote(adapter_id=verdict.adapter_id, verdict=verdict))
    provenance = student.store.provenance(outcomes[1].verdicts[0].adapter_id)
    assert len(provenance[REHEARSED]) == 1
    assert provenance[REHEARSED][0] in {self_edit_sha256(e) for e in edits[:2]}  # an accepted one, not the rejected


def test_a_stack_the_student_does_not_hold_is_refused_before_anything_is_trained_or_answered(roles):
    student, _, contexts = roles
    missing = "0" * 64
    job = TrainJob(context=contexts["B"], self_edit=_edit(contexts["B"]), settings=QUICK, on_top_of=[missing])
    stored = set(student.store.adapters.iterdir())
    with pytest.raises(ProtocolError) as refused:
        student.apply_self_edits(ApplySelfEdits(jobs=[job]))
    assert refused.value.reason == "refused" and refused.value.field == "jobs.on_top_of"
    assert set(student.store.adapters.iterdir()) == stored
    with pytest.raises(ProtocolError) as refused:
        student.answer_questions(AnswerQuestions(questions=["Who?"], adapter_ids=[None], stack=[missing]))
    assert refused.value.field == "stack"
