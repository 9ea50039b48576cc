"""Loading stored LoRA adapters onto a base model, for the roles that evaluate them."""

from __future__ import annotations

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
