"""The CUDA path in bfloat16: batched training, mixed-adapter logits and answers, and the demo, on a tiny model.

Skipped without CUDA; ``scripts/gpu-check.sh`` runs them on a GPU machine (``pytest -m gpu``). The CPU
versions, with tighter tolerances, are in tests/test_batched.py and tests/test_end_to_end.py. Each test
records the differences it measured; with ``SEAL_GPU_REPORT=FILE`` set they are written there as JSON,
so the tolerances below can be checked against a GPU's figures.

Why the tolerances are what they are. bfloat16 keeps 8 significant bits: one rounding is up to 2^-9
≈ 2e-3 relative, one unit in the last place (ulp) 2^-8 ≈ 4e-3. On a CPU, bf16 base with float32 adapters
(peft's default) gave the same losses one by one and batched to 1.7e-7 relative: there both paths run the
same kernels on the same rows. On CUDA they need not: the batched trainer pools rows of several candidates
and pads them to other widths, so cuBLAS may pick other kernels (another split of the sums) and the base's
bf16 products round differently, by about an ulp per element. A loss is a mean over many tokens, where
such errors mostly cancel, but each step's adapter update inherits them, so after a few steps a few ulps
separate the two trainings: losses within 2e-2 relative (5 ulps), logits within 2e-2 + 2e-2·|logit|
(3 to 4 ulps at the logits' size). These are derived, not yet measured: the first GPU run must confirm
them (its figures are in the report) and tighten them where it can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from library.ledger import verify_ledger
from library.lora import adapters_loaded, mixed_adapters
from library.models import load_model
from library.qa_format import clean_answer, question_prompt
from protocol.messages import AnswerQuestions, ApplySelfEdits, TrainConfig
from student.answering import generate_answers
from student.batched import train_adapters
from student.config import StudentConfig
from student.service import Student
from tests.jobs import train_job
from tests.sequential_training import train_adapter
from tests.test_batched import JOBS, PASSAGE, QUESTIONS

# SEAL_GPU_TEST_DEVICE=cpu runs these tests' own logic on a CPU (in bf16, slowly), to check them without a GPU.
DEVICE = os.environ.get("SEAL_GPU_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(),
        reason="needs an NVIDIA GPU (torch.cuda.is_available() is False); scripts/gpu-check.sh runs these on one",
    ),
]

LOSS_RTOL = 2e-2  # 5 bf16 ulps, relative: see the module docstring
LOGIT_RTOL, LOGIT_ATOL = 2e-2, 2e-2  # 3-4 bf16 ulps at the tiny model's logit size
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def measured():
    """What the tests measured, written to ``$SEAL_GPU_REPORT`` (if set) at the end of the module."""
    figures: dict[str, object] = {}
    yield figures
    if os.environ.get("SEAL_GPU_REPORT"):
        figures["device"] = torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE
        Path(os.environ["SEAL_GPU_REPORT"]).write_text(json.dumps(figures, indent=2))


@pytest.fixture(scope="module")
def cuda_model(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, DEVICE, "bfloat16")
    assert model.device.type == DEVICE and model.dtype == torch.bfloat16
    return model, tokenizer


@pytest.fixture(scope="module")
def trained(cuda_model):
    """The CPU tests' jobs trained on CUDA both ways: one by one through peft, and all together."""
    model, tokenizer = cuda_model
    sequential = [train_adapter(model, tokenizer, job, settings, "tiny") for job, settings in JOBS]
    together = train_adapters(model, tokenizer, JOBS, "tiny")
    yield sequential, together
    for result in sequential + together:
        shutil.rmtree(result.folder, ignore_errors=True)


def _relative(ours: list[float], theirs: list[float]) -> float:
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, theirs, strict=True))


def test_batched_training_matches_sequential_peft_in_bf16(trained, measured):
    sequential, together = trained
    worst = 0.0
    for one, many in zip(sequential, together, strict=True):
        assert (many.steps, many.num_sequences) == (one.steps, one.num_sequences)
        worst = max(worst, _relative(many.losses, one.losses))
        assert many.losses == pytest.approx(one.losses, rel=LOSS_RTOL)
        tensors = load_file(many.folder / "adapter_model.safetensors")
        assert {t.dtype for t in tensors.values()} == {torch.float32}, "adapters stay float32, as in peft"
    measured["loss_max_relative_difference"] = worst
    assert together[0].losses[-1] < together[0].losses[0], "training must lower the loss"


def test_mixed_adapter_logits_match_peft_in_bf16(cuda_model, trained, measured):
    model, tokenizer = cuda_model
    _, together = trained
    folders = {f"a{k}": result.folder for k, result in enumerate(together[:2])}
    prompt = ["The founder of Ostrevane was"]
    batch = tokenizer(prompt * 3, return_tensors="pt", add_special_tokens=False).to(model.device)
    names = ["a0", "__base__", "a1"]
    with mixed_adapters(model, folders) as mixed, torch.no_grad():
        logits = mixed(adapter_names=names, **batch).logits  # (3, T, V)
    expected = []
    with adapters_loaded(model, folders) as peft_model, torch.no_grad():
        for name in names:
            if name == "__base__":
                with peft_model.disable_adapter():
                    expected.append(peft_model(**batch).logits[0])
            else:
                peft_model.set_adapter(name)
                expected.append(peft_model(**batch).logits[0])
    expected = torch.stack(expected)
    assert logits.dtype == torch.bfloat16
    measured["logits_max_abs_difference"] = (logits.float() - expected.float()).abs().max().item()
    torch.testing.assert_close(logits, expected, rtol=LOGIT_RTOL, atol=LOGIT_ATOL)
    assert (expected[0] - expected[1]).abs().max() > 0.1, "the adapter must change the logits for this to mean much"


@pytest.fixture(scope="module")
def cuda_student(tiny_model_dir, tmp_path_factory) -> Student:
    settings = TrainConfig(rank=4, alpha=16, learning_rate=2e-2, epochs=4, batch_size=4)
    store = tmp_path_factory.mktemp("gpu-store")
    dtype = "auto" if DEVICE == "cuda" else "bfloat16"
    return Student(StudentConfig(model=tiny_model_dir, device=DEVICE, dtype=dtype, store=store, train=settings))


def _reference_answers(model, tokenizer, questions: list[str], max_new_tokens: int) -> list[str]:
    """``generate`` with greedy search, one question at a time on the model's device, then the first line."""
    answers = []
    for question in questions:
        prompt = question_prompt(tokenizer, question)
        batch = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(clean_answer(tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)))
    return answers


def test_student_on_cuda_answers_as_greedy_generate_with_each_adapter(cuda_student, measured):
    student = cuda_student
    assert student.model.device.type == DEVICE and student.model.dtype == torch.bfloat16, "auto is bf16 on CUDA"
    edits = ["Quorne founded it.", "It dates from 1873.", "A mill."]
    jobs = [train_job(edit, PASSAGE, f"g{k}") for k, edit in enumerate(edits)]
    candidates = student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates
    ids = [c.adapter.adapter_id for c in candidates]
    reply = student.answer_questions(AnswerQuestions(questions=QUESTIONS, adapter_ids=[*ids, None]))
    got = {r.adapter_id: r.answers for r in reply.results}
    folders = {a: student.store.path(a) for a in ids}
    with adapters_loaded(student.model, folders) as peft_model:
        for adapter_id in ids:
            peft_model.set_adapter(adapter_id)
            assert got[adapter_id] == generate_answers(peft_model, student.tokenizer, QUESTIONS, 32)
            assert got[adapter_id] == _reference_answers(peft_model, student.tokenizer, QUESTIONS, 32)
    assert got[None] == _reference_answers(student.model, student.tokenizer, QUESTIONS, 32)
    measured["distinct_answer_sets"] = len({tuple(a) for a in got.values()})


def test_demo_runs_on_the_gpu_through_three_processes(tiny_model_dir, tmp_path, measured):
    run_dir = tmp_path / "run"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # the carried wheels' folder too
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "160"}
    argv = ["demo", "--model", tiny_model_dir, "--limit", "1", "--k", "2", "--device", DEVICE]
    command = [sys.executable, "-m", "apps", *argv, "--run-dir", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    outcomes = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert len(outcomes) == 1 and len(outcomes[0]["verdicts"]) == 2
    report = verify_ledger(run_dir / "ledger.jsonl")
    assert report.ok and report.entries == 2
    configs = [path.read_text() for path in (run_dir / "config").iterdir() if path.is_file()]
    assert configs and all(DEVICE in text for text in configs), "every role was placed on the device"
    measured["demo_verdicts"] = len(outcomes[0]["verdicts"])
