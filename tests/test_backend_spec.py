"""Teacher specs, the backend factory, and the one-line errors before any work starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import library.vllm_engine
from apps.cli import build_parser, main
from apps.cli_config import build_config
from library.backend_errors import BackendUnavailable, TeacherBackendError
from teacher.backend_spec import BackendSpec, build_backend, check_backend, parse_spec
from teacher.config import TeacherConfig
from tests.fake_api import FAKE_KEY, FakeAPI


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("smollm2-135m-instruct", BackendSpec("transformers", "smollm2-135m-instruct")),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", BackendSpec("transformers", "HuggingFaceTB/SmolLM2-135M-Instruct")),
        ("transformers:/models/x", BackendSpec("transformers", "/models/x")),
        ("vllm:smollm2-135m-instruct", BackendSpec("vllm", "smollm2-135m-instruct")),
        ("openai:gpt-4o-mini", BackendSpec("openai", "gpt-4o-mini")),
        ("anthropic:claude-sonnet-4-0", BackendSpec("anthropic", "claude-sonnet-4-0")),
    ],
)
def test_specs_name_a_backend_and_a_model(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(("spec", "message"), [("olama:x", "unknown teacher backend"), ("openai:", "names no model")])
def test_bad_specs_say_what_to_write(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_a_local_folder_with_a_colon_is_a_transformers_model(tmp_path):
    folder = tmp_path / "run:3"
    folder.mkdir()
    assert parse_spec(str(folder)) == BackendSpec("transformers", str(folder))


def test_teacher_flags_build_an_api_config():
    args = build_parser().parse_args(
        ["teacher", "--model", "openai:teacher", "--base-url", "http://vllm:8000/v1", "--api-timeout-s", "5",
         "--api-retries", "1", "--vllm.max-loras", "8"]
    )
    config = build_config(TeacherConfig, args)
    assert (config.model, config.base_url, config.api_timeout_s, config.api_retries) == (
        "openai:teacher", "http://vllm:8000/v1", 5.0, 1
    )
    assert config.vllm.max_loras == 8


@pytest.mark.parametrize(
    "values",
    [
        {"model": "olama:x"},
        {"model": "smollm2-135m-instruct", "base_url": "http://x/v1"},
        {"model": "openai:x", "api_price_in": 1.0},
    ],
)
def test_inconsistent_teacher_configs_are_refused(values):
    with pytest.raises(ValidationError):
        TeacherConfig(**values)


def test_without_vllm_the_vllm_teacher_is_one_line(monkeypatch):
    monkeypatch.setattr(library.vllm_engine, "vllm_available", lambda: False)
    with pytest.raises(BackendUnavailable) as caught:
        build_backend(TeacherConfig(model="vllm:smollm2-135m-instruct"))
    message = str(caught.value)
    assert "vllm" in message and "install-vllm-cpu.sh" in message and "\n" not in message
    with pytest.raises(BackendUnavailable):
        check_backend(TeacherConfig(model="vllm:smollm2-135m-instruct"))


def test_the_factory_builds_an_api_teacher(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    with FakeAPI("anthropic") as api:
        backend = build_backend(TeacherConfig(model="anthropic:fake-model", base_url=api.base_url, api_retries=0))
        assert backend.model_id == "anthropic:fake-model"


@pytest.mark.parametrize(
    ("teacher", "env", "message"),
    [
        ("openai:fake-model", {}, "OPENAI_API_KEY"),
        ("anthropic:fake-model", {"ANTHROPIC_API_KEY": FAKE_KEY}, "cannot connect"),
        ("openai:no-such-model", {"OPENAI_API_KEY": FAKE_KEY}, "no-such-model"),
        ("vllm:smollm2-135m-instruct", {"_NO_VLLM": "1"}, "not installed"),
        ("olama:x", {}, "unknown teacher backend"),
    ],
)
def test_seal_demo_stops_in_one_line_before_starting_any_role(
    teacher, env, message, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    if "_NO_VLLM" in env:
        monkeypatch.setattr(library.vllm_engine, "vllm_available", lambda: False)
    run_dir = tmp_path / "run"
    with FakeAPI("openai") as api:
        url = api.base_url if teacher.startswith("openai") else "http://127.0.0.1:9"
        base_url = ["--teacher-base-url", url] if teacher.split(":")[0] in ("openai", "anthropic") else []
        code = main(["demo", "--model", tiny_model_dir, "--teacher", teacher, *base_url, "--run-dir", str(run_dir),
                     "--limit", "1"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (run_dir / "keys").exists() and not (run_dir / "results.jsonl").exists(), "no role was started"


def test_backend_errors_are_teacher_backend_errors():
    assert issubclass(BackendUnavailable, TeacherBackendError)


def test_vllm_engine_defaults_on_cpu_and_gpu():
    from library.vllm_engine import VLLMConfig, engine_kwargs

    cpu = engine_kwargs(VLLMConfig(), on_gpu=False, model_max_len=8192)
    assert cpu["gpu_memory_utilization"] == 0.3 and cpu["enforce_eager"] is True
    assert cpu["max_model_len"] == 4096 and cpu["enable_chunked_prefill"] is False
    assert cpu["max_num_batched_tokens"] >= cpu["max_model_len"], "whole prompts must fit one step"
    assert engine_kwargs(VLLMConfig(), on_gpu=False, model_max_len=512)["max_model_len"] == 512
    gpu = engine_kwargs(VLLMConfig(kv_cache_memory_bytes=1 << 30, enable_lora=False), on_gpu=True)
    assert gpu["kv_cache_memory_bytes"] == 1 << 30 and "gpu_memory_utilization" not in gpu
    assert "enable_chunked_prefill" not in gpu and "enable_lora" not in gpu and gpu["enforce_eager"] is False
    assert "tensor_parallel_size" not in gpu, "one GPU: vLLM's default executor"


def test_vllm_tensor_parallelism_runs_on_vllms_own_ray_executor_and_needs_gpus():
    from library.model_specs import ModelLoadError
    from library.vllm_engine import VLLMConfig, engine_kwargs

    split = engine_kwargs(VLLMConfig(tensor_parallel_size=4), on_gpu=True)
    assert split["tensor_parallel_size"] == 4 and split["distributed_executor_backend"] == "ray"
    one_node = engine_kwargs(VLLMConfig(tensor_parallel_size=2, distributed_executor_backend="mp"), on_gpu=True)
    assert one_node["distributed_executor_backend"] == "mp"
    with pytest.raises(ModelLoadError, match="needs GPUs"):
        engine_kwargs(VLLMConfig(tensor_parallel_size=2), on_gpu=False)
