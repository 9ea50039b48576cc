"""Computing a batch's shared prompt prefix once per model instead of once per row.

Every question is put to the student after the same instruction (see
:mod:`library.qa_format`): about 30 of a prompt's 45 tokens are identical in every
row. :func:`prefill` runs that prefix once per distinct adapter in the batch and
copies its key/value cache to each row; :func:`suffix_batch` lays out the rest
of each row after it, left-padded *between* prefix and suffix, with position
ids that give every real token the position it has unpadded. The result is the
same computation as a full forward, minus the repeated prefix. Used by the
student's answering and the auditor's scoring, which both batch many adapters.
"""

from __future__ import annotations

import copy

import torch
from transformers import Cache, PreTrainedModel


def shared_prefix_length(rows: list[list[int]], own: list[int]) -> int:
    """Tokens every row starts with, capped so that row ``i`` keeps at least ``own[i]`` tokens of its own."""
    limit = min(len(row) - n for row, n in zip(rows, own, strict=True))
    common = 0
    while common < limit and all(row[common] == rows[0][common] for row in rows):
        common += 1
    return max(common, 0)


@torch.no_grad()
def prefill(model: PreTrainedModel, prefix: list[int], adapter_names: list[str] | None, rows: int) -> Cache | None:
    """The key/value cache of ``prefix`` for ``rows`` rows (row ``i`` under ``adapter_names[i]``); None if empty.

    ``model`` is a peft model holding the adapters when ``adapter_names`` is given.
    """
    if not prefix:
        return None
    names = list(dict.fromkeys(adapter_names)) if adapter_names is not None else [None]
    routing = {"adapter_names": names} if adapter_names is not None else {}
    device = next(model.parameters()).device
    input_ids = torch.tensor([prefix] * len(names), device=device)  # (U, P): one row per distinct model
    cache = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **routing).past_key_values
    owner = [names.index(name) for name in adapter_names] if adapter_names is not None else [0] * rows
    cache.batch_select_indices(torch.tensor(owner, device=device))  # (U, ...) -> (rows, ...)
    return cache


def select_rows(cache: Cache | None, owner: list[int]) -> Cache | None:
    """A copy of ``cache`` whose row ``i`` is row ``owner[i]`` of ``cache``; ``cache`` itself is unchanged.

    Lets one prefill serve many batches: the prefix is computed once per model, then copied out per batch.
    """
    if cache is None:
        return None
    rows = copy.deepcopy(cache)
    rows.batch_select_indices(torch.tensor(owner, device=cache.layers[0].keys.device))
    return rows


def suffix_batch(rows: list[list[int]], start: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Each row from token ``start`` on, left-padded, after a cached prefix of ``start`` tokens.

    Returns ``input_ids`` (B, S), ``attention_mask`` (B, start + S) covering prefix and suffix,
    and ``position_ids`` (B, S).
    """
    width = max(len(row) - start for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, S)
    suffix_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        suffix = row[start:]
        input_ids[i, width - len(suffix) :] = torch.tensor(suffix)
        suffix_mask[i, width - len(suffix) :] = 1
    position_ids = start + (suffix_mask.cumsum(-1) - 1).clamp(min=0)  # real tokens: start, start + 1, ...
    attention_mask = torch.cat([torch.ones((len(rows), start), dtype=torch.long), suffix_mask], dim=1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
