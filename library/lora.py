"""LoRA adapters shared by the roles: their peft config, loading stored ones onto a base model, a portable config."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel

from library.scratch import scratch_folder
from library.stacked_lora import LoRAWeights, Routing, row_segments, stacked_layers

BASE_ADAPTER = "__base__"
"""The name of "no adapter" in a mixed-adapter batch (peft's too)."""


def lora_config(
    rank: int, alpha: float, target_modules: list[str] | str, base_model: str, dropout: float = 0.0
) -> LoraConfig:
    """The peft config of a fresh causal-LM adapter: every role builds its LoRA from this one."""
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )


@contextmanager
def adapters_loaded(model: PreTrainedModel, folders: dict[str, Path]) -> Iterator[PeftModel]:
    """``model`` wrapped with every adapter in ``folders`` (name -> folder); unloaded on exit.

    Use ``set_adapter(name)`` to pick one and ``disable_adapter()`` for the base model.
    """
    names = list(folders)
    peft_model = PeftModel.from_pretrained(model, folders[names[0]], adapter_name=names[0])
    try:
        for name in names[1:]:
            peft_model.load_adapter(folders[name], adapter_name=name)
        peft_model.eval()
        yield peft_model
    finally:
        peft_model.unload()


class MixedAdapters(nn.Module):
    """A base model holding several adapters; each row of a call runs under the adapter it names.

    Called like a peft model with ``adapter_names`` (one per row; :data:`BASE_ADAPTER`: none).
    Rows of one adapter should be contiguous: each run of equal names costs two thin matmuls
    per adapted module.
    """

    def __init__(self, model: PreTrainedModel, names: list[str], routing: Routing):
        super().__init__()
        self.model = model
        self.slots = {name: slot for slot, name in enumerate(names)}
        self.routing = routing

    @property
    def generation_config(self) -> Any:
        """The base model's: its end-of-sequence ids are the answers' stop tokens."""
        return self.model.generation_config

    def forward(self, adapter_names: list[str], **kwargs: Any) -> Any:
        """The base model's forward, with row ``i`` adapted by ``adapter_names[i]``."""
        unknown = set(adapter_names) - set(self.slots) - {BASE_ADAPTER}
        if unknown:
            raise KeyError(f"adapters not loaded: {sorted(unknown)}")
        self.routing.segments = row_segments([self.slots.get(name) for name in adapter_names])
        return self.model(**kwargs)


@contextmanager
def mixed_adapters(model: PreTrainedModel, folders: dict[str, Path]) -> Iterator[MixedAdapters]:
    """``model`` with every adapter in ``folders`` (name -> peft folder), for mixed-adapter batches.

    The same results as ``adapters_loaded`` with peft's ``adapter_names`` (on a bf16 base, those of
    each adapter loaded alone: peft's mixed batch rounds twice), without building a peft module per
    adapter and module; the model is in eval mode inside and restored on exit.
    """
    weights = [load_adapter_weights(model, folder) for folder in folders.values()]
    was_training = model.training
    model.eval()
    try:
        with stacked_layers(model, weights) as routing:
            yield MixedAdapters(model, list(folders), routing)
    finally:
        model.train(was_training)


def load_adapter_weights(model: PreTrainedModel, folder: Path) -> dict[str, LoRAWeights]:
    """A peft LoRA folder's weights per module name, on the model's device, with peft's scaling.

    Raises ValueError for peft options the stacked layer does not implement (DoRA, trained bias,
    per-module ranks or alphas, fan-in-fan-out weights, extra trained modules).
    """
    config = json.loads((folder / "adapter_config.json").read_text())
    options = ("use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "modules_to_save")
    unsupported = [key for key in options if config.get(key)]
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if unsupported:
        raise ValueError(f"{folder}: adapter_config.json sets {unsupported}; only plain LoRA is supported")
    rank, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    device = next(model.parameters()).device
    tensors = load_file(folder / "adapter_model.safetensors", device=str(device))
    modules = dict(model.named_modules())
    weights = {}
    for key in tensors:
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        if not isinstance(modules.get(name), nn.Linear):
            raise ValueError(f"{folder}: {name} is not a linear layer of the base model")
        a, b = tensors[key], tensors[key.replace(".lora_A.", ".lora_B.")]
        weights[name] = LoRAWeights(nn.Parameter(a, False), nn.Parameter(b, False), scaling, config["lora_dropout"])
    return weights


def finish_adapter_config(folder: Path, base_model: str) -> None:
    """Record the model *spec* (not this machine's path) so the adapter's content id is portable.

    Target modules are sorted too: peft writes them in set order, which varies from process to process.
    """
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_model
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def save_portable(peft_model: PeftModel, base_model: str, prefix: str) -> Path:
    """Save ``peft_model``'s adapter into a new folder of this process's scratch folder, with a portable config.

    The caller removes it once stored; a crash leaves it in the scratch folder, which the next process sweeps.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_folder()))
    try:
        peft_model.save_pretrained(folder)
        finish_adapter_config(folder, base_model)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder
