"""A stack of LoRA adapters merged into the base model's weights for the length of a block, then undone exactly.

Continual adaptation trains, answers and scores on top of the served stack: every adapter of it active at
once, frozen. Merged, the stack costs nothing per forward pass, and what runs on top of it (a candidate in
training, the mixed-adapter batches that answer and score several candidates at once) needs no change: for
those, "the base model" simply is the served stack. Each adapted weight gains ``sum_i s_i * B_i @ A_i``
(``s_i``: adapter i's scaling), as peft's ``merge_and_unload`` computes it, in float32 and rounded once to the
weight's dtype; on exit the original weights are copied back (not subtracted), so the base is restored bit for
bit. In float32 this equals peft with the whole stack active up to summation order; in bfloat16 the merged
weight is rounded once more than peft's unmerged sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PreTrainedModel

from library.lora import load_adapter_weights


@contextmanager
@torch.no_grad()
def merged_stack(model: PreTrainedModel, folders: list[Path]) -> Iterator[PreTrainedModel]:
    """``model`` with the peft LoRA adapters in ``folders`` (bottom first) merged into its weights; restored on exit.

    An empty list changes nothing. The block sees ``model`` itself, so anything holding it (a mixed-adapter
    wrapper, a training loop) works on top of the stack.
    """
    modules = dict(model.named_modules())
    originals: dict[str, torch.Tensor] = {}
    try:
        for folder in folders:
            for name, lora in load_adapter_weights(model, folder).items():
                weight = modules[name].weight  # (out, in)
                if name not in originals:
                    originals[name] = weight.detach().clone()
                delta = (lora.B.float() @ lora.A.float()) * lora.scaling  # (out, r) @ (r, in)
                weight.copy_((weight.float() + delta).to(weight.dtype))
        yield model
    finally:
        for name, original in originals.items():
            modules[name].weight.copy_(original)
