"""Invertible grid transforms for test-time training and augmented inference on ARC tasks.

A :class:`Transform` is applied to every grid of a task (inputs and outputs alike), so the
task's rule is carried over to the transformed task; a prediction made on a transformed
task is mapped back by ``inverse``. Size-changing transforms are injective but not onto, so
``inverse`` returns None for a grid that no grid maps to (e.g. an odd height for a height
doubling): such a prediction cannot be mapped back and casts no vote.

Families (as the few-shot self-edit names them): *basic* (rotations, flips, the two
diagonal reflections, translation), *size* (resolution, height and width doubled), *chain*
(a basic transform then a size one), *repeat* (the grid tiled twice); colour permutations
are built by :func:`color_permutation`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from protocol.fewshot import MAX_GRID_SIDE, NUM_COLORS, Grid

_ArrayMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Transform:
    """A named grid map and its inverse; ``inverse(forward(g)) == g`` for every grid ``g``."""

    name: str
    forward_array: _ArrayMap
    inverse_array: _ArrayMap

    def forward(self, grid: Grid) -> Grid:
        """The transformed grid."""
        return self.forward_array(np.asarray(grid)).tolist()

    def inverse(self, grid: Grid) -> Grid | None:
        """The grid that ``forward`` maps to ``grid``, or None when there is none."""
        array = np.asarray(grid)
        try:
            original = self.inverse_array(array)
        except ValueError:
            return None
        if original.size == 0 or not np.array_equal(self.forward_array(original), array):
            return None
        return original.tolist()

    def fits(self, grid: Grid) -> bool:
        """Whether the transformed grid stays within ARC's 30 × 30."""
        height, width = np.shape(self.forward_array(np.asarray(grid)))
        return height <= MAX_GRID_SIDE and width <= MAX_GRID_SIDE

    def then(self, other: Transform) -> Transform:
        """This transform followed by ``other`` (inverted in the reverse order)."""
        return Transform(
            f"{self.name}+{other.name}",
            lambda a: other.forward_array(self.forward_array(a)),
            lambda a: self.inverse_array(other.inverse_array(a)),
        )


def _translate(a: np.ndarray) -> np.ndarray:
    """Shift down and right by one cell, filling with background (0)."""
    return np.pad(a, ((1, 0), (1, 0)), constant_values=0)


def _halve(a: np.ndarray, axis: int) -> np.ndarray:
    if a.shape[axis] % 2:
        raise ValueError("odd size cannot be halved")
    return np.take(a, range(0, a.shape[axis], 2), axis=axis)


def _first_tile(a: np.ndarray, axis: int) -> np.ndarray:
    if a.shape[axis] % 2:
        raise ValueError("odd size is not two tiles")
    return np.take(a, range(a.shape[axis] // 2), axis=axis)


IDENTITY = Transform("identity", lambda a: a, lambda a: a)
BASIC = (
    Transform("rotate_90", lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    Transform("rotate_180", lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 2)),
    Transform("rotate_270", lambda a: np.rot90(a, 3), lambda a: np.rot90(a, -3)),
    Transform("flip_horizontal", np.fliplr, np.fliplr),
    Transform("flip_vertical", np.flipud, np.flipud),
    Transform("transpose", np.transpose, np.transpose),
    Transform("reflect_antidiagonal", lambda a: np.rot90(a, 2).T, lambda a: np.rot90(a.T, 2)),
    Transform("translate", _translate, lambda a: a[1:, 1:]),
)
SIZE = (
    Transform("increase_resolution", lambda a: a.repeat(2, 0).repeat(2, 1), lambda a: _halve(_halve(a, 0), 1)),
    Transform("increase_height", lambda a: a.repeat(2, 0), lambda a: _halve(a, 0)),
    Transform("increase_width", lambda a: a.repeat(2, 1), lambda a: _halve(a, 1)),
)
CHAIN = tuple(basic.then(size) for basic in BASIC if basic.name != "translate" for size in SIZE)
REPEAT = (
    Transform("repeat_horizontal", lambda a: np.tile(a, (1, 2)), lambda a: _first_tile(a, 1)),
    Transform("repeat_vertical", lambda a: np.tile(a, (2, 1)), lambda a: _first_tile(a, 0)),
)
INFERENCE_VIEWS = (IDENTITY, *BASIC[:7])
"""The views a test input is answered under, in order: the identity, then the bijective basic transforms."""


def color_permutation(rng: random.Random) -> Transform:
    """A random permutation of colours 1-9 (0, the background, stays)."""
    colors = list(range(1, NUM_COLORS))
    rng.shuffle(colors)
    table = np.array([0, *colors])
    inverse = np.argsort(table)
    name = "colors_" + "".join(str(c) for c in colors)
    return Transform(name, lambda a: table[a], lambda a: inverse[a])


def families(basic: bool, size: bool, chain: bool, repeat: bool) -> list[Transform]:
    """The transforms of the chosen families, identity first."""
    chosen = [IDENTITY]
    for wanted, family in ((basic, BASIC), (size, SIZE), (chain, CHAIN), (repeat, REPEAT)):
        if wanted:
            chosen += family
    return chosen
