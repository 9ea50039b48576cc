"""Grading few-shot (ARC) answers: exact grid match, with the answer grids held here alone.

A task counts as solved only when every one of its test inputs has an attempt (of at most
two) equal to the expected output grid: same height, same width, same colour in every cell.
"""

from __future__ import annotations

from protocol.fewshot import ArcGrade, ArcPrediction, Grid

MAX_ATTEMPTS = 2


def grids_equal(a: Grid, b: Grid) -> bool:
    """Exact match: the same shape and the same colour in every cell."""
    return len(a) == len(b) and all(list(row_a) == list(row_b) for row_a, row_b in zip(a, b, strict=False))


class ArcGrader:
    """Holds the answer grids (``{task_id: [output_grid per test input]}``) and grades predictions."""

    def __init__(self, solutions: dict[str, list[Grid]]):
        self._solutions = solutions

    def grade(self, prediction: ArcPrediction) -> ArcGrade:
        """Solved iff each test input's expected grid is among its first two attempts.

        A skipped prediction, or one with fewer answers than test inputs, is not solved.
        """
        expected = self._solutions.get(prediction.task_id)
        if expected is None:
            raise KeyError(f"no answer grids held for task {prediction.task_id}")
        correct = []
        for index, target in enumerate(expected):
            attempts = prediction.attempts[index][:MAX_ATTEMPTS] if index < len(prediction.attempts) else []
            correct.append(any(grids_equal(attempt, target) for attempt in attempts))
        return ArcGrade(task_id=prediction.task_id, solved=all(correct), correct=correct)
