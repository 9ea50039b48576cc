"""The one rule for whether a self-edit may teach the teacher (become ReST^EM training data).

The teacher applies it to choose what it trains on, the auditor to check a
teacher version's claimed examples against its own ledger, and the few-shot
bench to its solved tasks; all of them must agree. The rule reads a neutral
form, one :class:`Judged` per verdict on the self-edit, so that each caller
maps its own records (``Verdict`` objects, ledger entries, graded attempts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

NOT_JUDGED = "no verdict judged this self-edit"
VETOED = "a verdict carries a veto: a vetoed self-edit cannot teach the teacher"
REJECTED = "a verdict rejected this self-edit (e.g. retention): it cannot teach the teacher"
NO_GAIN = "the self-edit did not beat the unadapted student"


class Judged(NamedTuple):
    """One verdict on a self-edit, as the rule needs it."""

    accepted: bool
    vetoed: bool  # a rule stopped it (any veto at all)
    reward: float


def mean_reward(judged: Sequence[Judged]) -> float:
    """The mean reward over a self-edit's verdicts (each repeated training counts once)."""
    return sum(j.reward for j in judged) / len(judged)


def teaching_problem(judged: Sequence[Judged], min_reward: float = 0.0) -> str | None:
    """None if a self-edit with these verdicts (all of them) may teach the teacher, else the reason it may not.

    Every verdict must accept it without a veto (a self-edit that cost retention must not teach, however
    large its gain), and its mean reward must be above 0 and above ``min_reward``.
    """
    if not judged:
        return NOT_JUDGED
    if any(j.vetoed for j in judged):
        return VETOED
    if not all(j.accepted for j in judged):
        return REJECTED
    mean = mean_reward(judged)
    if mean <= 0:
        return NO_GAIN
    if mean <= min_reward:
        return f"its mean reward {mean:.6f} is not above the minimum {min_reward:.6f}"
    return None
