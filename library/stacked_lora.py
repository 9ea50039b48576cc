"""A stacked multi-LoRA linear layer: one frozen base layer, many independent adapters, one pass.

peft mixes adapters in one batch only for inference, so training K candidates
together needs this small layer of our own. It wraps an ``nn.Linear`` and
holds, per adapter *slot*, its own ``A`` (r, in) and ``B`` (out, r). A batch
is laid out with each slot's rows contiguous, and a shared :class:`Routing`
says which rows belong to which slot, so each slot's LoRA update is computed
on its own rows only: each adapter's gradient comes only from its own samples.
Slots may differ in rank, scale, dropout and in which modules they target.

The same layer serves mixed-adapter inference (:func:`library.lora.mixed_adapters`):
it costs a slice and two thin matmuls per adapter and module, where peft's
mixed batch re-indexes rows and injects a module per adapter on every load.
Both the student (training, answering) and the auditor (scoring) use it.

Initialisation and saving follow peft exactly: :func:`init_lora_weights`
consumes the RNG in peft's order (so under the same ``torch.manual_seed`` it
gives bit-identical A matrices), and :func:`peft_state_dict` names tensors as
peft's ``save_pretrained`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel


@dataclass
class Routing:
    """Which rows of the current batch belong to which adapter slot: ``(slot, first_row, end_row)``.

    A slot of None (or one a module holds no weights for) leaves its rows to the base layer alone.
    """

    segments: list[tuple[int | None, int, int]] = field(default_factory=list)


def row_segments(slots: list[int | None]) -> list[tuple[int | None, int, int]]:
    """``(slot, first_row, end_row)`` for each run of equal slots, in row order."""
    segments: list[tuple[int | None, int, int]] = []
    for row, slot in enumerate(slots):
        if segments and segments[-1][0] == slot:
            segments[-1] = (slot, segments[-1][1], row + 1)
        else:
            segments.append((slot, row, row + 1))
    return segments


@dataclass
class LoRAWeights:
    """One adapter's trainable pair on one module; the update is ``B(A(x)) * scaling``."""

    A: nn.Parameter  # (r, in_features)
    B: nn.Parameter  # (out_features, r)
    scaling: float
    dropout: float = 0.0


class StackedLoRALinear(nn.Module):
    """``base(x)`` plus, on each slot's rows, that slot's LoRA update (if it targets this module)."""

    def __init__(self, base: nn.Linear, routing: Routing):
        super().__init__()
        self.base = base
        self.routing = routing
        self.adapters: dict[int, LoRAWeights] = {}  # slot -> weights; not registered: the optimizer owns them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)  # (N, T, out)
        segments = self.routing.segments
        # Views, one per segment: their backward is one concatenation, where slicing would zero-fill a
        # full-size gradient per slot and add them all up.
        pieces = x.split([stop - start for _, start, stop in segments])
        updates = [self._update(piece, slot) for piece, (slot, _, _) in zip(pieces, segments, strict=True)]
        if all(u is None for u in updates):
            return result
        # As peft's single-adapter forward does, the sum is taken in the adapters' dtype (float32) and rounded
        # once to the base's (peft's mixed batch rounds the update first: the same in fp32, not in bf16).
        if not torch.is_grad_enabled():  # inference: add in place
            for update, (_, start, stop) in zip(updates, segments, strict=True):
                if update is not None:
                    result[start:stop] += update
            return result
        dtype = next(u.dtype for u in updates if u is not None)
        parts = [u if u is not None else result.new_zeros((stop - start, *result.shape[1:]), dtype=dtype)
                 for u, (_, start, stop) in zip(updates, segments, strict=True)]  # fmt: skip
        # One add of the concatenated updates: cheaper to differentiate than in-place adds into slices.
        return (result + torch.cat(parts)).to(result.dtype)

    def _update(self, rows: torch.Tensor, slot: int | None) -> torch.Tensor | None:
        """Slot ``slot``'s LoRA update of its rows, in the adapter's dtype (None if it does not adapt this module).

        Shape (n_slot, T, out).
        """
        lora = self.adapters.get(slot) if slot is not None else None
        if lora is None:
            return None
        rows = rows.to(lora.A.dtype)  # (n_slot, T, in)
        if lora.dropout:
            rows = F.dropout(rows, lora.dropout, self.training)
        # peft computes lora_B(lora_A(x)) * scaling; scaling the rank-r activations instead costs out/r times
        # fewer multiplications, and is bit-identical when the scale is a power of two (the default α/r = 2).
        return F.linear(F.linear(rows, lora.A) * lora.scaling, lora.B)  # (n_slot, T, out)


def target_module_names(model: PreTrainedModel, targets: list[str] | str) -> list[str]:
    """The linear modules peft would adapt for ``targets``, in ``named_modules`` order.

    ``"all-linear"`` is every ``nn.Linear`` except the output head (peft's rule);
    a list matches a module whose full name equals an entry or ends with ``"." + entry``.
    Raises ValueError if a matched module is not an ``nn.Linear`` or nothing matches.
    """
    modules = dict(model.named_modules())
    if targets == "all-linear":
        head = model.get_output_embeddings()
        names = [n for n, m in modules.items() if isinstance(m, nn.Linear) and m is not head]
    else:
        names = [n for n in modules if any(n == t or n.endswith(f".{t}") for t in targets)]
    if not names:
        raise ValueError(f"target_modules {targets!r} matches no module of the model; name its linear layers")
    for name in names:
        if not isinstance(modules[name], nn.Linear):
            raise ValueError(f"target_modules: {name} is a {type(modules[name]).__name__}; only nn.Linear is supported")
    return names


def init_lora_weights(
    model: PreTrainedModel, names: list[str], rank: int, alpha: float, dropout: float
) -> dict[str, LoRAWeights]:
    """Fresh LoRA weights for ``names``, drawing from the global RNG exactly as peft's default init does.

    Per module, peft builds ``nn.Linear(in, r)`` (kaiming-uniform A), then ``nn.Linear(r, out)``
    (kaiming-uniform B), then re-draws A with kaiming-uniform(a=sqrt(5)) and zeroes B. We make the
    same three draws in the same order so A is bit-identical under the same seed.
    """
    modules = dict(model.named_modules())
    weights = {}
    for name in names:
        base: nn.Linear = modules[name]
        a = torch.empty(rank, base.in_features)  # (r, in), created on CPU as peft does
        b = torch.empty(base.out_features, rank)  # (out, r)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.kaiming_uniform_(b, a=math.sqrt(5))
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(b)
        # peft moves the new layers to the base layer's device and dtype, then (for a half-precision base)
        # back to float32: A is rounded through the base's dtype.
        if base.weight.dtype.is_floating_point:
            a = a.to(base.weight.device, base.weight.dtype)
        a = a.to(base.weight.device).float()
        b = b.to(base.weight.device).float()
        weights[name] = LoRAWeights(nn.Parameter(a), nn.Parameter(b), alpha / rank, dropout)
    return weights


@contextmanager
def stacked_layers(model: PreTrainedModel, adapters: list[dict[str, LoRAWeights]]) -> Iterator[Routing]:
    """Replace every module some adapter targets by a :class:`StackedLoRALinear`; restore on exit.

    ``adapters[slot]`` maps module names to that slot's weights. Yields the shared routing,
    which the caller sets before each forward pass.
    """
    routing = Routing()
    modules = dict(model.named_modules())
    wrapped: dict[str, StackedLoRALinear] = {}
    for slot, weights in enumerate(adapters):
        for name, lora in weights.items():
            if name not in wrapped:
                wrapped[name] = StackedLoRALinear(modules[name], routing)
                wrapped[name].train(modules[name].training)  # dropout only where the model trains
            wrapped[name].adapters[slot] = lora
    try:
        for name, layer in wrapped.items():
            _set_module(model, name, layer)
        yield routing
    finally:
        for name, layer in wrapped.items():
            _set_module(model, name, layer.base)


def peft_state_dict(weights: dict[str, LoRAWeights]) -> dict[str, torch.Tensor]:
    """Tensors under the names peft's ``save_pretrained`` gives them, on CPU and contiguous."""
    tensors = {}
    for name, lora in weights.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = lora.A.detach().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = lora.B.detach().cpu().contiguous()
    return tensors


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
