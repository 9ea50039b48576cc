"""The forgetting matrix: accuracy on passage i's acceptance questions after update j, as a table and a heatmap.

Its input is one :class:`ForgettingRecord` per (update, passage) pair: after the j-th accepted update, how many
of passage i's sealed acceptance questions the served model answered right. ``seal adapt`` writes the matrix
from the auditor's continual judging (each candidate judged on top of the served stack, with earlier passages'
acceptance questions replayed; :func:`apps.adapt_report.forgetting_records`). A cell before passage i was
learned is the model's accuracy before its update; an empty cell was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ForgettingRecord:
    """After update ``update`` (1 = the first accepted one), ``correct`` of ``total`` right on ``passage``."""

    update: int
    passage: str
    correct: int
    total: int


@dataclass(frozen=True)
class ForgettingMatrix:
    """``accuracy[i][j]``: passage ``passages[i]`` after update ``updates[j]`` (None: not measured)."""

    passages: list[str]
    updates: list[int]
    accuracy: list[list[float | None]]

    def markdown(self) -> str:
        """The matrix as a Markdown table, a row per passage and a column per update."""
        head = "| passage | " + " | ".join(f"after {j}" for j in self.updates) + " |"
        rule = "|---|" + "---:|" * len(self.updates)
        rows = [
            f"| {p} | " + " | ".join("" if a is None else f"{a:.2f}" for a in row) + " |"
            for p, row in zip(self.passages, self.accuracy, strict=True)
        ]
        return "\n".join([head, rule, *rows])


def forgetting_matrix(records: list[ForgettingRecord]) -> ForgettingMatrix:
    """The matrix of ``records``: passages in order of first appearance, updates ascending; repeats are an error."""
    passages = list(dict.fromkeys(r.passage for r in records))
    updates = sorted({r.update for r in records})
    cells: dict[tuple[str, int], float] = {}
    for r in records:
        if r.total < 1 or not 0 <= r.correct <= r.total:
            raise ValueError(f"passage {r.passage} after update {r.update}: {r.correct} right of {r.total}")
        if (r.passage, r.update) in cells:
            raise ValueError(f"passage {r.passage} after update {r.update} is measured twice")
        cells[(r.passage, r.update)] = r.correct / r.total
    return ForgettingMatrix(passages, updates, [[cells.get((p, j)) for j in updates] for p in passages])


def plot_matrix(matrix: ForgettingMatrix, path: Path, xlabel: str = "after update") -> Path:
    """A heatmap PNG of the matrix (accuracy 0 to 1; unmeasured cells blank), written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if a is None else a for a in row] for row in matrix.accuracy], dtype=float)
    # room for the passage names on the left and the title on top, however few the updates
    fig, ax = plt.subplots(figsize=(4.0 + 0.7 * len(matrix.updates), 1.6 + 0.45 * len(matrix.passages)))
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(matrix.updates)), [str(j) for j in matrix.updates])
    ax.set_yticks(range(len(matrix.passages)), [p[:24] for p in matrix.passages])
    ax.set_xlabel(xlabel)
    ax.set_title("right answers per passage", fontsize=10)
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
