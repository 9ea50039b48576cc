"""The test-time training set of an ARC task, and the vote that turns augmented answers into two attempts.

Training examples come from the task's own demonstrations: each leave-one-out task (one
demonstration becomes the query, the others its context) and each leave-two-out task (one
becomes the query, another is dropped), each under every transform the self-edit's families
allow, optionally with colours permuted and the demonstrations shuffled. The identity
leave-one-out tasks come first; the rest are sampled, and the set is capped in size.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from itertools import permutations

from library.arc import grid_to_text, task_prompt
from protocol.fewshot import ArcPair, ArcTask, FewShotSelfEdit, Grid
from student.augment import Transform, color_permutation, families


@dataclass(frozen=True)
class TrainingExample:
    """One sequence to train on: the task prompt and the answer grid that follows it."""

    prompt: str
    answer: str
    transform: str


def transform_pair(pair: ArcPair, transform: Transform) -> ArcPair:
    """The demonstration with ``transform`` applied to both grids."""
    return ArcPair(input=transform.forward(pair.input), output=transform.forward(pair.output))


def held_out_tasks(pairs: list[ArcPair]) -> list[tuple[list[ArcPair], ArcPair]]:
    """``(context, query)`` of every leave-one-out task, then every leave-two-out task with a non-empty context."""
    n = len(pairs)
    tasks = [([p for i, p in enumerate(pairs) if i != q], pairs[q]) for q in range(n)] if n >= 2 else []
    if n >= 3:
        tasks += [([p for i, p in enumerate(pairs) if i not in (q, d)], pairs[q]) for q, d in permutations(range(n), 2)]
    return tasks


def build_training_set(task: ArcTask, edit: FewShotSelfEdit, max_examples: int, seed: int) -> list[TrainingExample]:
    """Up to ``max_examples`` augmented held-out tasks, built as ``edit`` says (deterministic in ``seed``)."""
    rng = random.Random(seed)
    transforms = families(
        edit.use_basic_augmentations,
        edit.use_size_augmentations,
        edit.use_chain_augmentations,
        edit.use_repeat_augmentations,
    )
    held_out = held_out_tasks(list(task.train))
    grids = [g for pair in task.train for g in (pair.input, pair.output)] + list(task.test_inputs)
    usable = [t for t in transforms if all(t.fits(g) for g in grids)]  # identity always fits
    n_plain = len(task.train)  # the identity leave-one-out tasks: kept first, never recoloured
    rest = [(c, q, t) for i, (c, q) in enumerate(held_out) for t in usable if i >= n_plain or t is not usable[0]]
    rng.shuffle(rest)
    chosen = [(c, q, usable[0], False) for c, q in held_out[:n_plain]]
    chosen += [(c, q, t, edit.permute_colors) for c, q, t in rest]
    return [_example(c, q, t, recolour, edit.permute_examples, rng) for c, q, t, recolour in chosen[:max_examples]]


def _example(
    context: list[ArcPair], query: ArcPair, transform: Transform, recolour: bool, shuffle: bool, rng: random.Random
) -> TrainingExample:
    if recolour:
        transform = transform.then(color_permutation(rng))
    shown = [transform_pair(p, transform) for p in context]
    if shuffle:
        rng.shuffle(shown)
    target = transform_pair(query, transform)
    return TrainingExample(task_prompt(shown, target.input), grid_to_text(target.output), transform.name)


def vote(candidates: list[Grid | None], attempts: int = 2) -> list[tuple[Grid, int]]:
    """The ``attempts`` grids most views agree on, with their vote counts; ties go to the earlier view.

    None (a view whose answer was not a grid or could not be mapped back) casts no vote.
    """
    keys = [_key(grid) for grid in candidates if grid is not None]
    counts = Counter(keys)
    first_seen = {key: index for index, key in reversed(list(enumerate(keys)))}
    ranked = sorted(counts, key=lambda key: (-counts[key], first_seen[key]))
    return [([list(row) for row in key], counts[key]) for key in ranked[:attempts]]


def _key(grid: Grid) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(row) for row in grid)
