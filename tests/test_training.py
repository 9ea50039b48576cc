"""The one training loop: steps, per-epoch mean losses, parameter groups, and padding."""

from __future__ import annotations

import torch

from library.training import IGNORE_INDEX, collate, fit, shuffled_batches


def test_fit_steps_once_per_batch_and_averages_each_epoch():
    weight = torch.nn.Parameter(torch.tensor(3.0))
    frozen = torch.nn.Parameter(torch.tensor(5.0))  # its own group, never given a gradient

    def step(target: float) -> float:
        loss = (weight - target) ** 2
        loss.backward()
        return loss.item()

    run = fit([{"params": [weight], "lr": 0.1}, {"params": [frozen], "lr": 0.1}], [[0.0, 0.0], [], [0.0]], step)
    assert run.steps == 3 and len(run.losses) == 2, "an epoch without batches has no mean"
    assert run.losses[0] > run.losses[1] and weight.item() < 3.0
    assert frozen.item() == 5.0


def test_shuffled_batches_cover_every_item_each_epoch_in_a_seeded_order():
    epochs = shuffled_batches(5, epochs=3, batch_size=2, seed=1)
    assert [[len(batch) for batch in batches] for batches in epochs] == [[2, 2, 1]] * 3
    assert all(sorted(i for batch in batches for i in batch) == list(range(5)) for batches in epochs)
    assert epochs == shuffled_batches(5, epochs=3, batch_size=2, seed=1)


def test_collate_right_pads_and_masks_padding_from_attention_and_loss():
    batch = collate([[5, 6, 7], [8]], pad_id=0, labels=[[IGNORE_INDEX, 6, 7], [8]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collate([[1, 2]], pad_id=0)["labels"].tolist() == [[1, 2]], "labels default to the inputs"
