"""Real forward/backward passes on a tiny model: training, padding, the adapter store, answering."""

from __future__ import annotations

import errno
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch

from auditor.safety import load_probes
from auditor.scoring import answer_logliks
from library.datasets import RETENTION_SET
from library.lora import adapters_loaded
from library.models import ModelLoadError, load_model
from library.qa_format import question_prompt
from library.training import collate
from protocol.artifacts import TRAINED_FROM, ArtifactError, ArtifactStore, content_id, self_edit_sha256
from protocol.codec import ProtocolError
from protocol.messages import AnswerQuestions, ApplySelfEdits, TrainConfig, TrainJob
from student.anchors import ANCHOR_TOKENS, anchor_questions, anchor_texts
from student.config import StudentConfig
from student.service import Student
from student.training import tokenize_texts, training_texts
from tests.jobs import train_job
from tests.sequential_training import train_adapter

FACT = "The founder of Ostrevane was Ilsabet Quorne in 1873."
QUESTION, ANSWER = "Who founded Ostrevane?", "Ilsabet Quorne"


def _job(text: str = FACT, self_edit: str = "", context_id: str = "c1") -> TrainJob:
    return train_job(self_edit, text, context_id)


def test_training_texts_are_passage_then_lines_without_list_markers():
    job = _job(self_edit="1. Quorne founded it.\n- It dates from 1873.\n\n  * Quorne was a founder.  ")
    texts = training_texts(job, TrainConfig())
    assert texts == [FACT, "Quorne founded it.", "It dates from 1873.", "Quorne was a founder."]
    assert training_texts(job, TrainConfig(include_context=False))[0] == "Quorne founded it."


def test_padding_does_not_count_in_the_loss(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    seqs = tokenize_texts(tokenizer, ["a short one", "a much longer sequence of several more words here"], 64)
    batch = collate(seqs, tokenizer.pad_token_id)
    assert (batch["labels"] == -100).sum() == len(seqs[1]) - len(seqs[0])
    with torch.no_grad():
        padded_loss = model(**batch).loss
        # the same loss computed without any padding: token-weighted mean of per-sequence losses
        per_seq = [(model(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss, len(s) - 1) for s in seqs]
        unpadded = sum(loss * n for loss, n in per_seq) / sum(n for _, n in per_seq)
        batch["input_ids"][batch["attention_mask"] == 0] = 7  # any pad id gives the same loss
        other_pad_loss = model(**batch).loss
    assert padded_loss.item() == pytest.approx(unpadded.item(), rel=1e-5)
    assert other_pad_loss.item() == pytest.approx(padded_loss.item(), rel=1e-6)


def test_lora_training_on_a_fact_changes_the_model(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=60, batch_size=4)
    job = _job(self_edit=f"{QUESTION} {ANSWER}.\nQuorne founded Ostrevane.")
    trained = train_adapter(model, tokenizer, job, settings, "tiny")
    assert trained.losses[-1] < 0.5 * trained.losses[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "base weights must not change"

    prompt = tokenizer("The founder of Ostrevane was", return_tensors="pt", add_special_tokens=False)
    base_ll = answer_logliks(model, tokenizer, [(QUESTION, ANSWER)])[0]
    with adapters_loaded(model, {"a": trained.folder}) as peft_model:
        out = peft_model.generate(**prompt, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        continuation = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        adapted_ll = answer_logliks(peft_model, tokenizer, [(QUESTION, ANSWER)])[0]
    base_out = model.generate(**prompt, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    base_continuation = tokenizer.decode(base_out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert continuation.strip().startswith("Ilsabet Quorne"), continuation
    assert "Ilsabet" not in base_continuation
    assert adapted_ll > base_ll
    shutil.rmtree(trained.folder)


@pytest.fixture
def student(tiny_model_dir, tmp_path) -> Student:
    settings = TrainConfig(rank=4, alpha=8, epochs=2, batch_size=2)
    return Student(StudentConfig(model=tiny_model_dir, store=tmp_path / "store", train=settings))


def test_student_trains_one_candidate_per_job_into_the_store(student):
    jobs = [_job(self_edit="Quorne founded it.", context_id="c1"), _job(self_edit="It is old.", context_id="c2")]
    reply = student.apply_self_edits(ApplySelfEdits(jobs=jobs))
    assert [c.self_edit_id for c in reply.candidates] == [j.self_edit.self_edit_id for j in jobs]
    ids = {c.adapter.adapter_id for c in reply.candidates}
    assert len(ids) == 2
    for candidate in reply.candidates:
        folder = Path(candidate.adapter.uri)
        assert content_id(folder) == candidate.adapter.adapter_id
        assert candidate.steps == 2 and len(candidate.losses) == 2
    assert not list(student.store.adapters.glob(".incoming-*"))


def test_student_answers_with_base_and_adapter_and_caches_base(student, monkeypatch):
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[_job(self_edit="x")])).candidates[0]
    request = AnswerQuestions(questions=[QUESTION, "What year?"], adapter_ids=[None, candidate.adapter.adapter_id])
    reply = student.answer_questions(request)
    assert [r.adapter_id for r in reply.results] == request.adapter_ids
    assert all(len(r.answers) == 2 for r in reply.results)
    calls = []
    monkeypatch.setattr(student, "_generate_base", lambda *a: calls.append(a) or ["?"] * len(a[0]))
    again = student.answer_questions(AnswerQuestions(questions=[QUESTION], adapter_ids=[None]))
    assert again.results[0].answers == reply.results[0].answers[:1]
    assert calls == []


def test_store_is_content_addressed_and_atomic(student, tmp_path, monkeypatch):
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[_job(self_edit="y")])).candidates[0]
    source = Path(candidate.adapter.uri)
    other = ArtifactStore(tmp_path / "other")
    assert other.put_adapter(source, "tiny", {}).adapter_id == candidate.adapter.adapter_id

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    third = ArtifactStore(tmp_path / "third")
    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(ArtifactError, match="No space left"):
        third.put_adapter(source, "tiny", {})
    assert list(third.adapters.iterdir()) == []


def test_store_refuses_an_altered_adapter(student):
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[_job(self_edit="z")])).candidates[0]
    weights = Path(candidate.adapter.uri) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match"):
        student.store.path(candidate.adapter.adapter_id)


def test_the_vllm_backend_without_vllm_fails_in_one_line_before_loading_anything(monkeypatch, tmp_path):
    import library.vllm_engine

    monkeypatch.setattr(library.vllm_engine, "vllm_available", lambda: False)
    config = StudentConfig(model=str(tmp_path / "no-such-model"), store=tmp_path / "store", answer_backend="vllm")
    with pytest.raises(ModelLoadError, match=r"^--answer-backend vllm needs vllm, which is not installed") as e:
        Student(config)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "store").exists(), "nothing was loaded or created"


def test_the_store_records_every_self_edit_an_adapter_was_trained_from(student):
    """The auditor's binding of adapter to text: the same training data under another self-edit keeps its id."""
    first = _job(self_edit="Quorne founded it.")
    renamed = first.self_edit.model_copy(update={"self_edit_id": "e-again", "teacher_version": "v1"})
    again = first.model_copy(update={"self_edit": renamed})
    [a] = student.apply_self_edits(ApplySelfEdits(jobs=[first])).candidates
    assert student.store.provenance(a.adapter.adapter_id)[TRAINED_FROM] == [self_edit_sha256(first.self_edit)]
    [b] = student.apply_self_edits(ApplySelfEdits(jobs=[again])).candidates
    assert b.adapter.adapter_id == a.adapter.adapter_id, "provenance is not part of the adapter id"
    recorded = student.store.provenance(a.adapter.adapter_id)[TRAINED_FROM]
    assert recorded == [self_edit_sha256(first.self_edit), self_edit_sha256(renamed)]


def test_answering_with_an_adapter_not_in_the_store_is_refused_without_revealing_the_store(student):
    from protocol.codec import ProtocolError

    missing = "ab" * 32
    with pytest.raises(ProtocolError, match="not in the student's store") as refused:
        student.handle(AnswerQuestions(questions=["Who?"], adapter_ids=[missing], max_new_tokens=4))
    assert refused.value.reason == "refused" and str(student.store.root) not in str(refused.value)


@pytest.mark.parametrize("request_kind", ["promote", "shadow"])
def test_promoting_or_shadowing_an_adapter_not_in_the_store_is_refused_not_an_internal_error(student, request_kind):
    """Found by the full fuzz run: these raised the store's own error, which became an `internal` reply."""
    from protocol.codec import ProtocolError
    from protocol.messages import AnswerServed, Promote
    from tests.examples import VERDICT

    missing = "ab" * 32
    request = (
        Promote(adapter_id=missing, verdict=VERDICT.model_copy(update={"adapter_id": missing}))
        if request_kind == "promote"
        else AnswerServed(questions=["Who?"], max_new_tokens=4, shadow=missing)
    )
    with pytest.raises(ProtocolError, match="not in the student's store") as refused:
        student.handle(request)
    assert refused.value.reason == "refused" and str(student.store.root) not in str(refused.value)
    assert refused.value.field == ("adapter_id" if request_kind == "promote" else "shadow")


def test_anchors_are_the_base_models_own_answers_trained_beside_the_self_edit(student, monkeypatch):
    settings = TrainConfig(rank=4, alpha=8, epochs=1, batch_size=2, anchors=3)
    questions = anchor_questions(3)
    base = student.answer_questions(
        AnswerQuestions(questions=questions, adapter_ids=[None], max_new_tokens=ANCHOR_TOKENS)
    ).results[0]
    seen: list[list[str]] = []
    recorded = lambda job, s: seen.append(training_texts(job, s)) or seen[-1]  # noqa: E731
    monkeypatch.setattr("student.batched.training_texts", recorded)
    forged = _job(self_edit="Quorne founded it.").model_copy(update={"settings": settings, "anchor_texts": ["forged"]})
    candidate = student.apply_self_edits(ApplySelfEdits(jobs=[forged])).candidates[0]
    expected = anchor_texts(student.tokenizer, questions, base.answers)
    assert seen[0] == [FACT, "Quorne founded it.", *expected]  # a client's anchor texts are replaced
    assert candidate.num_sequences == 5 and candidate.settings.anchors == 3
    prompts = [question_prompt(student.tokenizer, q) for q in questions]
    assert all(text.startswith(p) for text, p in zip(expected, prompts, strict=True))
    assert "anchors" not in TrainConfig().model_dump()  # settings recorded before anchors existed keep their hashes


def test_more_anchors_than_the_student_has_is_a_typed_refusal(student):
    job = _job().model_copy(update={"settings": TrainConfig(anchors=49)})
    with pytest.raises(ProtocolError, match="anchors=49, but the student has 48 anchor questions") as raised:
        student.apply_self_edits(ApplySelfEdits(jobs=[job]))
    assert raised.value.field == "jobs.settings.anchors"


def test_anchor_questions_are_disjoint_from_the_auditors_probes_and_retention_set():
    probes = {p.prompt.lower() for p in load_probes(None)}
    retention = {q["question"].lower() for q in json.loads(RETENTION_SET.read_text())}
    anchors = [q.lower() for q in anchor_questions(48)]
    assert len(set(anchors)) == 48 and not set(anchors) & (probes | retention)


def test_fewer_anchors_are_spread_over_the_files_topics_not_its_first_run():
    everything = anchor_questions(48)
    chosen = anchor_questions(16)
    positions = [everything.index(q) for q in chosen]
    assert positions == sorted(positions) and len(set(chosen)) == 16
    assert positions[0] == 0 and positions[-1] >= 44  # reaches the file's last topics (nature), not capitals alone
    assert max(b - a for a, b in itertools.pairwise(positions)) <= 3
