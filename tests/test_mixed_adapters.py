"""Mixed-adapter inference on the stacked LoRA layer: the same logits as peft's mixed batch, no peft modules."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from library.lora import BASE_ADAPTER, adapters_loaded, load_adapter_weights, mixed_adapters
from library.models import load_model
from library.stacked_lora import StackedLoRALinear
from protocol.messages import Context, SelfEdit, TrainConfig, TrainJob
from student.batched import train_adapters

SETTINGS = [
    TrainConfig(rank=4, alpha=8, learning_rate=5e-2, epochs=2, batch_size=2, seed=1),
    TrainConfig(rank=8, alpha=8, learning_rate=5e-2, epochs=2, seed=2, target_modules=["q_proj", "v_proj"]),
]


def _job(text: str, name: str) -> TrainJob:
    return TrainJob(
        context=Context(context_id=name, title="t", text="Ostrevane was founded in 1873 by Ilsabet Quorne."),
        self_edit=SelfEdit(
            self_edit_id=name,
            context_id=name,
            format="implications",
            text=text,
            prompt="p",
            teacher_model="t",
            teacher_version="v0",
        ),
    )


@pytest.fixture(scope="module")
def model_and_folders(tiny_model_dir):
    """The tiny model and two trained adapters (different ranks and target modules), by name."""
    model, tokenizer = load_model(tiny_model_dir)
    jobs = [(_job("Quorne founded it.\nIt dates from 1873.", "a"), SETTINGS[0])]
    jobs.append((_job("A weaver built a mill.", "b"), SETTINGS[1]))
    trained = train_adapters(model, tokenizer, jobs, "tiny")
    yield model, {"a": trained[0].folder, "b": trained[1].folder}
    for result in trained:
        shutil.rmtree(result.folder, ignore_errors=True)


def test_mixed_batch_logits_match_peft_mixed_batch(model_and_folders):
    model, folders = model_and_folders
    ids = torch.randint(3, model.config.vocab_size, (5, 7))
    names = ["a", BASE_ADAPTER, "b", "a", "b"]  # rows of one adapter need not be contiguous
    with torch.no_grad():
        with adapters_loaded(model, folders) as peft_model:
            expected = peft_model(input_ids=ids, adapter_names=names).logits
        with mixed_adapters(model, folders) as mixed:
            got = mixed(input_ids=ids, adapter_names=names).logits
        plain = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[0], plain[0], atol=1e-4), "adapter a should change its row"
    torch.testing.assert_close(got[1], plain[1], rtol=0, atol=0)  # the base row is the base model's


def test_mixed_adapters_leave_the_model_as_it_was(model_and_folders):
    model, folders = model_and_folders
    before = {name: type(module) for name, module in model.named_modules()}
    with mixed_adapters(model, folders) as mixed:
        assert any(isinstance(m, StackedLoRALinear) for m in model.modules())
        assert not any(m.training for m in model.modules()), "inference: no dropout"
        with pytest.raises(KeyError, match="not loaded"):
            mixed(input_ids=torch.ones((1, 2), dtype=torch.long), adapter_names=["c"])
    assert {name: type(module) for name, module in model.named_modules()} == before
    assert not model.training


def test_loading_refuses_peft_options_the_stacked_layer_lacks(model_and_folders, tmp_path):
    model, folders = model_and_folders
    folder = tmp_path / "dora"
    shutil.copytree(folders["a"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        load_adapter_weights(model, folder)
    weights = load_adapter_weights(model, folders["b"])
    assert all(name.endswith(("q_proj", "v_proj")) for name in weights)
    assert all(isinstance(model.get_submodule(name), nn.Linear) for name in weights)
    assert {w.scaling for w in weights.values()} == {SETTINGS[1].alpha / SETTINGS[1].rank}
