"""Every augmentation is inverted exactly on random grids; answers that no grid maps to are refused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from student.augment import (
    BASIC,
    CHAIN,
    IDENTITY,
    INFERENCE_VIEWS,
    REPEAT,
    SIZE,
    Transform,
    color_permutation,
    families,
)

ALL = (IDENTITY, *BASIC, *SIZE, *CHAIN, *REPEAT)


@st.composite
def grids(draw, max_side: int = 12) -> list[list[int]]:
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    return [draw(st.lists(st.integers(0, 9), min_size=width, max_size=width)) for _ in range(height)]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: t.name)
@settings(max_examples=40, deadline=None)
@given(grid=grids())
def test_inverse_undoes_forward(transform: Transform, grid):
    assert transform.inverse(transform.forward(grid)) == grid


@settings(max_examples=40, deadline=None)
@given(grid=grids(), seed=st.integers(0, 10_000))
def test_color_permutation_is_inverted_and_keeps_background(grid, seed):
    transform = color_permutation(random.Random(seed))
    moved = transform.forward(grid)
    assert transform.inverse(moved) == grid
    assert [[cell == 0 for cell in row] for row in moved] == [[cell == 0 for cell in row] for row in grid]


@settings(max_examples=40, deadline=None)
@given(grid=grids(), seed=st.integers(0, 10_000))
def test_chained_with_colors_is_inverted(grid, seed):
    transform = CHAIN[seed % len(CHAIN)].then(color_permutation(random.Random(seed)))
    assert transform.inverse(transform.forward(grid)) == grid


def test_geometric_transforms_move_cells_as_named():
    grid = [[1, 2, 3], [4, 5, 6]]
    by_name = {t.name: t for t in ALL}
    assert by_name["rotate_90"].forward(grid) == [[3, 6], [2, 5], [1, 4]]  # counter-clockwise
    assert by_name["flip_horizontal"].forward(grid) == [[3, 2, 1], [6, 5, 4]]
    assert by_name["transpose"].forward(grid) == [[1, 4], [2, 5], [3, 6]]
    assert by_name["reflect_antidiagonal"].forward(grid) == [[6, 3], [5, 2], [4, 1]]
    assert by_name["translate"].forward(grid) == [[0, 0, 0, 0], [0, 1, 2, 3], [0, 4, 5, 6]]
    assert by_name["increase_height"].forward([[1, 2]]) == [[1, 2], [1, 2]]
    assert by_name["repeat_horizontal"].forward([[1], [2]]) == [[1, 1], [2, 2]]


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("increase_resolution", [[1, 2], [3, 4]]),  # blocks are not uniform
        ("increase_height", [[1], [2], [3]]),  # odd height
        ("translate", [[1, 2], [3, 4]]),  # the added border is not background
        ("repeat_vertical", [[1, 2], [2, 1]]),  # the two tiles differ
    ],
)
def test_inverse_refuses_grids_outside_the_image(name, answer):
    assert {t.name: t for t in ALL}[name].inverse(answer) is None


def test_size_transforms_that_leave_30_by_30_do_not_fit():
    big = [[0] * 16 for _ in range(16)]
    assert not SIZE[0].fits(big)
    assert BASIC[0].fits(big)


def test_families_select_transforms_identity_first():
    assert families(False, False, False, False) == [IDENTITY]
    chosen = families(True, False, False, True)
    assert chosen == [IDENTITY, *BASIC, *REPEAT]
    assert len(families(True, True, True, True)) == 1 + len(BASIC) + len(SIZE) + len(CHAIN) + len(REPEAT)
    assert INFERENCE_VIEWS[0] is IDENTITY
