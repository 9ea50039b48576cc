"""Typed records of the few-shot (ARC) domain: grids, tasks, the self-edit schema, predictions and grades.

A few-shot *self-edit* is not training text but a training recipe: which augmentation
families build the student's test-time training set, whether colours and example order
are permuted, where the loss falls, and the learning rate and number of epochs. The
teacher writes it as JSON; :class:`FewShotSelfEdit` is what that JSON must validate
against. The bounds here are the schema's (a value outside them is invalid JSON from the
teacher and is resampled); the student additionally clamps learning rate and epochs into
its own configured limits.

An :class:`ArcTask` carries the demonstration pairs and the test *inputs* only: the test
outputs (the answer grids) are held by the auditor alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from protocol.messages import Body

MAX_GRID_SIDE = 30
"""ARC grids are at most 30 × 30."""
NUM_COLORS = 10
"""ARC colours are the integers 0-9; 0 is the background."""


def _check_grid(grid: list[list[int]]) -> list[list[int]]:
    """A non-empty rectangle of colours 0-9, at most 30 × 30."""
    if not grid or not grid[0]:
        raise ValueError("a grid needs at least one row and one column")
    if len(grid) > MAX_GRID_SIDE or len(grid[0]) > MAX_GRID_SIDE:
        raise ValueError(f"a grid is at most {MAX_GRID_SIDE} × {MAX_GRID_SIDE}, got {len(grid)} × {len(grid[0])}")
    if any(len(row) != len(grid[0]) for row in grid):
        raise ValueError("every row of a grid must have the same length")
    if any(not 0 <= cell < NUM_COLORS for row in grid for cell in row):
        raise ValueError(f"grid cells are colours 0-{NUM_COLORS - 1}")
    return grid


Grid = Annotated[list[list[int]], AfterValidator(_check_grid)]
"""A grid of colours, row by row: ``grid[row][column]``; the one grid type, for every role.

As a type hint it is ``list[list[int]]``; the check runs where pydantic validates (messages, tasks read from files).
"""


class ArcPair(Body):
    """One demonstration: an input grid and the output grid the task's rule makes of it."""

    input: Grid
    output: Grid


class ArcTask(Body):
    """A few-shot task as the teacher and the student see it: demonstrations and test inputs, no answers."""

    task_id: str = Field(min_length=1, description="The task's id in its source (e.g. '44f52bb0').")
    train: list[ArcPair] = Field(min_length=1, description="Demonstration pairs.")
    test_inputs: list[Grid] = Field(min_length=1, description="Inputs whose outputs must be predicted.")


LossStrategy = Literal["all_tokens", "output_tokens"]


class FewShotSelfEdit(Body):
    """The teacher's recipe for the student's test-time training on one task (the JSON it must write)."""

    use_basic_augmentations: bool = Field(
        description="Rotations, flips, reflections, transpose and translation of every grid of the task."
    )
    use_size_augmentations: bool = Field(description="Resolution, height and width increases (each cell doubled).")
    use_chain_augmentations: bool = Field(description="Chains of two transforms (a geometric one, then a size one).")
    use_repeat_augmentations: bool = Field(description="Grids tiled twice, side by side or stacked.")
    permute_colors: bool = Field(description="Also train on copies with colours 1-9 permuted (0 stays background).")
    permute_examples: bool = Field(description="Shuffle the order of the demonstrations in each training example.")
    strategy: LossStrategy = Field(
        description="'all_tokens': loss on the whole sequence; 'output_tokens': on the answer grid only."
    )
    learning_rate: float = Field(gt=0, le=1e-2, description="LoRA learning rate (the student clamps it further).")
    num_train_epochs: int = Field(ge=1, le=20, description="Passes over the training set (the student clamps it).")


class FewShotProposal(Body):
    """One sample of the teacher for one task: the self-edit if its JSON validated, else why not."""

    proposal_id: str = Field(min_length=1)
    task_id: str = Field(min_length=1)
    self_edit: FewShotSelfEdit | None = Field(description="None: no valid JSON within the attempts allowed.")
    completions: list[str] = Field(description="Every completion sampled for it, the last one used or failed.")
    error: str | None = Field(None, description="Why the last completion was rejected, when none validated.")
    prompt: str = Field(description="The exact prompt the teacher was given.")
    teacher_model: str
    teacher_version: str


class ArcPrediction(Body):
    """The student's answer to a task: up to two attempts per test input, in test-input order."""

    task_id: str = Field(min_length=1)
    attempts: list[list[Grid]] = Field(description="For each test input, at most two candidate output grids.")
    votes: list[list[int]] = Field(description="How many augmented views voted for each attempt.")
    adapter_id: str | None = Field(None, description="The test-time adapter in the store; None: no training.")
    num_examples: int = Field(0, ge=0, description="Augmented training examples the adapter was trained on.")
    skipped: str | None = Field(None, description="Why the task was not attempted (e.g. its prompt is too long).")
    seconds: float = Field(0.0, ge=0)


class ArcGrade(Body):
    """The auditor's grade: solved only when every test input has an exactly matching attempt."""

    task_id: str
    solved: bool
    correct: list[bool] = Field(description="For each test input, whether one of its attempts matched exactly.")
