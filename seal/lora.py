"""LoRA adapter files shared by the roles: loading stored adapters onto a base model, and a portable config."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel


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
