"""The one rule for whether a self-edit may teach the teacher."""

from __future__ import annotations

import pytest

from library.teaching import NO_GAIN, NOT_JUDGED, REJECTED, VETOED, Judged, mean_reward, teaching_problem


@pytest.mark.parametrize(
    ("judged", "problem"),
    [
        ([Judged(True, False, 0.4), Judged(True, False, 0.6)], None),
        ([], NOT_JUDGED),
        ([Judged(True, False, 0.9), Judged(True, True, 0.9)], VETOED),
        ([Judged(True, False, 0.9), Judged(False, False, 0.9)], REJECTED),
        ([Judged(True, False, 0.5), Judged(True, False, -0.5)], NO_GAIN),
    ],
)
def test_every_verdict_must_accept_without_a_veto_and_the_mean_reward_beat_zero(judged, problem):
    assert teaching_problem(judged) == problem


def test_a_minimum_reward_above_zero_raises_the_bar():
    judged = [Judged(True, False, 0.25), Judged(True, False, 0.75)]
    assert mean_reward(judged) == 0.5
    assert teaching_problem(judged, min_reward=0.4) is None
    assert "not above the minimum" in teaching_problem(judged, min_reward=0.5)
    assert teaching_problem([Judged(True, False, 0.0)], min_reward=-1.0) == NO_GAIN, "never at or below 0"
