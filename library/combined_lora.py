"""A stack of LoRA adapters as one LoRA adapter of summed rank, for engines that take one adapter per request.

peft serves a stack with every adapter active at once: each adapted linear layer adds
``sum_i s_i * B_i (A_i x)`` (``s_i``: adapter i's scaling). The same sum is one LoRA whose ``A`` stacks
the ``A_i`` (``(sum r_i, in)``) and whose ``B`` sets the scaled ``s_i * B_i`` side by side
(``(out, sum r_i)``), with scaling 1 (``lora_alpha`` = rank). Modules an adapter does not target get
zero blocks, so every module has the one rank peft's config allows. The combination is exact in
arithmetic (only the order of the floating-point additions changes), keeps the base weights untouched,
and lets one engine hold every served version as an adapter; merging into the base weights instead
would need a new model per version. The cost: the rank grows with the stack (the engine's
``max_lora_rank`` bounds it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"


def _scaling(config: dict) -> float:
    rank, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config = json.loads((folder / "adapter_config.json").read_text())
    unsupported = [k for k in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save") if config.get(k)]
    if unsupported or config.get("bias", "none") != "none":
        raise ValueError(f"{folder}: {unsupported or ['bias']} set; only plain LoRA adapters can be combined")
    return config, load_file(folder / "adapter_model.safetensors")


def combined_rank(folders: list[Path]) -> int:
    """The rank of the one LoRA that :func:`combine_stack` makes of ``folders``: the sum of theirs."""
    return sum(json.loads((folder / "adapter_config.json").read_text())["r"] for folder in folders)


def combine_stack(folders: list[Path], out: Path) -> Path:
    """Write into ``out`` one peft LoRA folder equal to ``folders`` all active at once; return ``out``."""
    adapters = [_read(folder) for folder in folders]
    ranks = [config["r"] for config, _ in adapters]
    modules = sorted({key.removesuffix(A_SUFFIX) for _, t in adapters for key in t if key.endswith(A_SUFFIX)})
    tensors: dict[str, torch.Tensor] = {}
    for module in modules:
        shape_a, shape_b = _shapes(adapters, module)
        blocks_a, blocks_b = [], []
        for (config, weights), rank in zip(adapters, ranks, strict=True):
            a, b = weights.get(module + A_SUFFIX), weights.get(module + B_SUFFIX)
            if a is None:  # this adapter leaves the module alone: a zero block of its rank
                a, b = torch.zeros(rank, shape_a[1]), torch.zeros(shape_b[0], rank)
            blocks_a.append(a.float())
            blocks_b.append(b.float() * _scaling(config))
        dtype = next(w[module + A_SUFFIX].dtype for _, w in adapters if module + A_SUFFIX in w)
        tensors[module + A_SUFFIX] = torch.cat(blocks_a, dim=0).to(dtype).contiguous()  # (sum r, in)
        tensors[module + B_SUFFIX] = torch.cat(blocks_b, dim=1).to(dtype).contiguous()  # (out, sum r)
    config = _combined_config(adapters[0][0], sum(ranks), [m.rsplit(".", 1)[-1] for m in modules])
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out


def _shapes(adapters: list[tuple[dict, dict[str, torch.Tensor]]], module: str) -> tuple[torch.Size, torch.Size]:
    weights = next(w for _, w in adapters if module + A_SUFFIX in w)
    return weights[module + A_SUFFIX].shape, weights[module + B_SUFFIX].shape


def _combined_config(first: dict, rank: int, targets: list[str]) -> dict:
    config = {**first, "r": rank, "lora_alpha": rank, "use_rslora": False, "lora_dropout": 0.0}
    config["target_modules"] = sorted(set(targets))
    return config
