"""Many candidates at once: batched training equals separate trainings, batched evaluation equals one-by-one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

import student.answering as answering
import student.batched as batched
from auditor.scoring import BASE_ADAPTER, answer_logliks
from library.datasets import DEMO_DOCUMENTS
from library.lora import adapters_loaded, mixed_adapters
from library.models import load_model
from library.qa_format import clean_answer, question_prompt
from library.stacked_lora import init_lora_weights, target_module_names
from protocol.messages import AnswerQuestions, ApplySelfEdits, TrainConfig, TrainJob
from student.answering import generate_answers
from student.batched import plan_micro_batches, train_adapters
from student.config import StudentConfig
from student.service import Student
from student.training import lora_config
from tests.jobs import train_job
from tests.sequential_training import train_adapter

PASSAGE = "Ostrevane is a hill town founded in 1873 by the weaver Ilsabet Quorne, who built its first mill."
QUESTIONS = ["Who founded Ostrevane?", "When was Ostrevane founded?", "What did Quorne build?"]


def _job(self_edit: str, context: str = PASSAGE, name: str = "c") -> TrainJob:
    return train_job(self_edit, context, name)


# Different lengths, numbers of sequences and steps, seeds, ranks, learning rates and target modules.
JOBS = [
    (
        _job(
            "1. Quorne founded Ostrevane.\n2. The town dates from 1873.\n3. Its first mill was built by a weaver.",
            name="a",
        ),
        TrainConfig(rank=4, alpha=8, learning_rate=1e-2, epochs=3, batch_size=2, seed=1),
    ),
    (
        _job("A weaver founded it.", context="Short passage.", name="b"),
        TrainConfig(
            rank=8, alpha=16, learning_rate=5e-3, epochs=5, batch_size=1, seed=2, target_modules=["q_proj", "v_proj"]
        ),
    ),
    (
        _job("- Ilsabet Quorne\n- 1873\n- a mill\n- a hill town\n- weaving", name="c"),
        TrainConfig(rank=4, alpha=4, learning_rate=1e-2, epochs=2, batch_size=8, seed=3, include_context=False),
    ),
    (
        _job("Quorne was a weaver who founded a town on a hill and built a mill there in the year 1873.", name="d"),
        TrainConfig(rank=2, alpha=8, learning_rate=2e-2, epochs=4, batch_size=3, seed=1),
    ),
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def trained(model_and_tokenizer):
    """The JOBS trained both ways: sequentially one by one, and all together."""
    model, tokenizer = model_and_tokenizer
    sequential = [train_adapter(model, tokenizer, job, settings, "tiny") for job, settings in JOBS]
    together = train_adapters(model, tokenizer, JOBS, "tiny")
    yield sequential, together
    for result in sequential + together:
        shutil.rmtree(result.folder, ignore_errors=True)


def test_micro_batches_cover_every_sample_once_and_keep_long_apart_from_short():
    lengths = [40, 5, 6, 41, 5, 7, 39, 6]
    groups = plan_micro_batches(lengths, max_tokens=4096, overhead=8)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert sorted(sorted(lengths[i] for i in g) for g in groups) == [[5, 5, 6, 6, 7], [39, 40, 41]]
    capped = plan_micro_batches(lengths, max_tokens=80, overhead=8)
    assert all(len(g) * max(lengths[i] for i in g) <= 80 for g in capped)
    assert plan_micro_batches([50], max_tokens=10) == [[0]]  # a lone sequence longer than the cap still runs


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
def test_lora_init_draws_the_same_weights_as_peft(model_and_tokenizer, targets):
    model, _ = model_and_tokenizer
    settings = TrainConfig(rank=4, alpha=8, target_modules=targets, seed=7)
    torch.manual_seed(7)
    peft_model = get_peft_model(model, lora_config(settings, "tiny"))
    try:
        expected = {
            n.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight"): p.detach().clone()
            for n, p in peft_model.named_parameters()
            if "lora_A" in n
        }
    finally:
        peft_model.unload()
    names = target_module_names(model, targets)
    torch.manual_seed(7)
    ours = init_lora_weights(model, names, settings.rank, settings.alpha, 0.0)
    assert list(ours) == list(expected)
    assert all(torch.equal(ours[n].A, expected[n]) for n in names)
    assert all(not ours[n].B.any() for n in names)


def test_batched_training_matches_separate_sequential_trainings(trained):
    sequential, together = trained
    assert len({s.steps for s in sequential}) > 2, "the jobs must differ in number of steps"
    for one, many in zip(sequential, together, strict=True):
        assert (many.steps, many.num_sequences) == (one.steps, one.num_sequences)
        assert many.losses == pytest.approx(one.losses, rel=1e-4)
        ours, theirs = (load_file(r.folder / "adapter_model.safetensors") for r in (many, one))
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-3, atol=1e-5)
        assert (many.folder / "adapter_config.json").read_text() == (one.folder / "adapter_config.json").read_text()
    assert together[0].losses[-1] < together[0].losses[0]


def test_batched_adapters_load_with_peft_and_act_like_sequential_ones(model_and_tokenizer, trained):
    model, tokenizer = model_and_tokenizer
    sequential, together = trained
    batch = tokenizer(["The founder of Ostrevane was"], return_tensors="pt", add_special_tokens=False)
    peft_model = PeftModel.from_pretrained(model, together[0].folder)
    try:
        with torch.no_grad():
            logits = peft_model(**batch).logits
    finally:
        peft_model.unload()
    with adapters_loaded(model, {"seq": sequential[0].folder}) as reference, torch.no_grad():
        expected = reference(**batch).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_kl_anchors_keep_the_models_own_next_token_distributions_where_token_anchors_move_them(
    model_and_tokenizer,
):
    model, tokenizer = model_and_tokenizer
    anchors = ["Q: What is the capital of France? A: Paris.", "Q: How many legs has a spider? A: Eight."]
    job = _job("1. Quorne founded Ostrevane.\n2. The town dates from 1873.").model_copy(
        update={"anchor_texts": anchors}
    )
    base = TrainConfig(rank=4, alpha=8, learning_rate=2e-2, epochs=6, batch_size=2, anchors=2)
    kl = base.model_copy(update={"anchor_loss": "kl"})
    results = train_adapters(model, tokenizer, [(job, base), (job, kl)], "tiny")
    batch = tokenizer(anchors, return_tensors="pt", padding=True, add_special_tokens=False)
    real = batch["attention_mask"].bool()
    try:
        with torch.no_grad():
            before = model(**batch).logits.log_softmax(-1)[real]
            folders = {"tokens": results[0].folder, "kl": results[1].folder}
            drift = {}
            with adapters_loaded(model, folders) as adapted:
                for name in folders:
                    adapted.set_adapter(name)
                    after = adapted(**batch).logits.log_softmax(-1)[real]
                    drift[name] = torch.nn.functional.kl_div(after, before, log_target=True, reduction="batchmean")
    finally:
        for result in results:
            shutil.rmtree(result.folder, ignore_errors=True)
    assert results[1].losses[-1] < results[1].losses[0]  # the self-edit is still learned
    assert drift["kl"] < 0.5 * drift["tokens"], drift
    assert "anchor_loss" not in base.model_dump() and kl.model_dump()["anchor_loss"] == "kl"


def test_bfloat16_base_trains_together_as_peft_does_one_by_one(tiny_model_dir):
    """A bf16 base with float32 adapters (peft's default): same initial A, same losses, same logits."""
    model, tokenizer = load_model(tiny_model_dir, "cpu", "bfloat16")
    assert model.dtype == torch.bfloat16
    jobs = JOBS[:2]
    sequential = [train_adapter(model, tokenizer, job, settings, "tiny") for job, settings in jobs]
    together = train_adapters(model, tokenizer, jobs, "tiny")
    try:
        for one, many in zip(sequential, together, strict=True):
            assert many.losses == pytest.approx(one.losses, rel=1e-4)
            assert {t.dtype for t in load_file(many.folder / "adapter_model.safetensors").values()} == {torch.float32}
        batch = tokenizer(["The founder of Ostrevane was"], return_tensors="pt", add_special_tokens=False)
        with adapters_loaded(model, {"seq": sequential[0].folder}) as reference, torch.no_grad():
            expected = reference(**batch).logits
        with mixed_adapters(model, {"ours": together[0].folder}) as mixed, torch.no_grad():
            logits = mixed(adapter_names=["ours"], **batch).logits
        with torch.no_grad():
            base = model(**batch).logits
        exact_model, _ = load_model(tiny_model_dir, "cpu", "float32")
        folders = {"seq": sequential[0].folder, "ours": together[0].folder}
        with adapters_loaded(exact_model, folders) as exact, torch.no_grad():
            exact.base_model.set_adapter("seq")
            exact_seq = exact(**batch).logits
            exact.base_model.set_adapter("ours")
            exact_ours = exact(**batch).logits
        torch.testing.assert_close(exact_ours, exact_seq, rtol=1e-2, atol=1e-2)  # the same adapter, in float32
        assert logits.dtype == torch.bfloat16
        # In bf16 the two code paths round differently (by up to 0.07 on logits of about 5, where bf16's step is
        # 0.03); each must be about as close to the float32 model as the other, and rank the tokens the same.
        our_error, peft_error = (logits.float() - exact_seq).abs(), (expected.float() - exact_seq).abs()
        assert our_error.max() <= 1.5 * peft_error.max() and our_error.mean() <= 1.5 * peft_error.mean()
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))
        assert (logits - base).abs().max() > 0.1, "the adapter must change the logits for the check to mean anything"
    finally:
        for result in sequential + together:
            shutil.rmtree(result.folder, ignore_errors=True)


def test_memory_grows_by_adapter_and_optimizer_state_not_model_copies(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    base = {p.data_ptr(): p.numel() for p in model.parameters()}
    flags = [p.requires_grad for p in model.parameters()]
    seen = {}

    def spy(model_, routing, runs, step, *rest):
        if step == 0:
            seen["model"] = {p.data_ptr(): p.numel() for p in model_.parameters()}
            seen["trainable"] = sum(p.numel() for run in runs for p in run.parameters())
        return real_step(model_, routing, runs, step, *rest)

    real_step = batched._train_step
    monkeypatch.setattr(batched, "_train_step", spy)
    settings = TrainConfig(rank=4, epochs=1)
    results = train_adapters(model, tokenizer, [(_job(f"Fact {k}.", name=f"m{k}"), settings) for k in range(3)], "t")
    modules = dict(model.named_modules())
    per_adapter = sum(
        4 * (modules[n].in_features + modules[n].out_features) for n in target_module_names(model, "all-linear")
    )
    assert seen["model"] == base, "the base weights are shared, never copied"
    assert seen["trainable"] == 3 * per_adapter
    assert [p.requires_grad for p in model.parameters()] == flags, "requires_grad is restored"
    for result in results:
        shutil.rmtree(result.folder)


@pytest.fixture(scope="module")
def student(tiny_model_dir, tmp_path_factory) -> Student:
    settings = TrainConfig(rank=4, alpha=16, learning_rate=2e-2, epochs=4, batch_size=4)
    return Student(StudentConfig(model=tiny_model_dir, store=tmp_path_factory.mktemp("store"), train=settings))


@pytest.fixture(scope="module")
def candidates(student):
    jobs = [_job(edit, name=f"s{k}") for k, edit in enumerate(["Quorne founded it.", "It dates from 1873.", "A mill."])]
    return student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates


def test_student_trains_candidates_together_like_one_at_a_time(student, candidates):
    job = _job("It dates from 1873.", name="s1")
    alone = train_adapter(student.model, student.tokenizer, job, student.config.train, student.config.model)
    assert candidates[1].losses == pytest.approx(alone.losses, rel=1e-4)
    assert candidates[1].steps == alone.steps
    shutil.rmtree(alone.folder)


def test_student_answers_many_adapters_in_one_mixed_batch(student, candidates, monkeypatch):
    ids = [c.adapter.adapter_id for c in candidates]
    reply = student.answer_questions(AnswerQuestions(questions=QUESTIONS, adapter_ids=[ids[2], None, *ids[:2]]))
    assert [r.adapter_id for r in reply.results] == [ids[2], None, *ids[:2]]
    got = {r.adapter_id: r.answers for r in reply.results}
    folders = {a: student.store.path(a) for a in ids}
    with adapters_loaded(student.model, folders) as peft_model:
        for adapter_id in ids:
            peft_model.set_adapter(adapter_id)
            assert got[adapter_id] == generate_answers(peft_model, student.tokenizer, QUESTIONS, 32)
    assert len({tuple(a) for a in got.values()}) > 1, "the adapters should answer differently"

    calls = []
    real_greedy = answering._greedy
    monkeypatch.setattr(answering, "_greedy", lambda *a: calls.append(a[3]) or real_greedy(*a))
    student.answer_questions(AnswerQuestions(questions=QUESTIONS, adapter_ids=ids))
    assert len(calls) == 1 and sorted(calls[0]) == sorted(ids * len(QUESTIONS)), "one pass serves every adapter"


def _reference_answers(model, tokenizer, questions: list[str], max_new_tokens: int) -> list[str]:
    """``generate`` with greedy search, one question at a time, then the first line."""
    answers = []
    for question in questions:
        batch = tokenizer(question_prompt(tokenizer, question), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(clean_answer(tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)))
    return answers


def _reference_logliks(model, tokenizer, pairs: list[tuple[str, str]]) -> list[float]:
    """One unpadded full forward per pair: the answer tokens' mean log-probability."""
    scores = []
    for question, answer in pairs:
        prompt = tokenizer(question_prompt(tokenizer, question), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + tokenizer(answer, add_special_tokens=False)["input_ids"]])
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (T, V)
        targets = ids[0, len(prompt) :]
        scores.append(logprobs[len(prompt) - 1 : -1].gather(-1, targets[:, None]).mean().item())
    return scores


def test_answers_are_those_of_greedy_generate(student, candidates):
    model, tokenizer = student.model, student.tokenizer
    questions = [*QUESTIONS, "Say something long about weaving and hills, please, at some length?"]
    expected = _reference_answers(model, tokenizer, questions, 24)
    assert generate_answers(model, tokenizer, questions, 24) == expected
    assert any(expected), "the tiny model should say something"
    with adapters_loaded(model, {"a": student.store.path(candidates[0].adapter.adapter_id)}) as peft_model:
        expected = _reference_answers(peft_model, tokenizer, questions, 24)
        assert generate_answers(peft_model, tokenizer, questions, 24, adapter_names=["a"] * len(questions)) == expected


def test_scoring_many_adapters_in_one_forward_matches_one_at_a_time(student, candidates):
    model, tokenizer = student.model, student.tokenizer
    pairs = [
        ("Who founded Ostrevane?", "Ilsabet Quorne"),
        ("When?", "1873"),
        ("What did Quorne build first?", "a mill"),
    ]
    ids = [c.adapter.adapter_id for c in candidates]
    with torch.no_grad():
        expected = {None: _reference_logliks(model, tokenizer, pairs)}
    assert answer_logliks(model, tokenizer, pairs) == pytest.approx(expected[None], abs=1e-4)
    with adapters_loaded(model, {a: student.store.path(a) for a in ids}) as peft_model, torch.no_grad():
        for adapter_id in ids:
            peft_model.set_adapter(adapter_id)
            expected[adapter_id] = _reference_logliks(peft_model, tokenizer, pairs)
        names = [a or BASE_ADAPTER for a in [None, *ids] for _ in pairs]
        flat = answer_logliks(peft_model, tokenizer, pairs * (len(ids) + 1), batch_size=64, adapter_names=names)
    for k, model_id in enumerate([None, *ids]):
        assert flat[k * len(pairs) : (k + 1) * len(pairs)] == pytest.approx(expected[model_id], abs=1e-4)
    assert expected[ids[0]] != pytest.approx(expected[None], abs=1e-3), "the adapters should change the scores"


def test_inner_loop_bench_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    from bench import inner_loop

    data = tmp_path / "recorded.json"  # the demo documents, each with two recorded self-edits
    documents = json.loads(DEMO_DOCUMENTS.read_text())
    data.write_text(json.dumps([{**d, "completions": [d["context"], d["title"]]} for d in documents]))
    argv = ["--model", tiny_model_dir, "--data", str(data), "--ks", "1,2", "--epochs", "1", "--matmul-seconds", "0.1"]
    inner_loop.main([*argv, "--out", str(tmp_path)])
    result = json.loads((tmp_path / "inner_loop.json").read_text())
    assert [row["k"] for row in result["rows"]] == [1, 2]
    assert all(row["seal_per_hour"] > 0 and row["baseline_per_hour"] > 0 for row in result["rows"])
    assert result["command"].startswith("python -m bench.inner_loop --model")
