"""Proposing ahead: the next context's self-edits are sampled while this one's are tried, one at a time, in order."""

from __future__ import annotations

import threading
import time

import pytest

from protocol.messages import Context, SelfEdit
from teacher.loop import Proposals
from tests.examples import SELF_EDIT

CONTEXTS = [Context(context_id=f"c{i}", title=f"T{i}", text=f"Passage {i}.") for i in range(4)]


class RecordingTeacher:
    """A propose function that takes ``seconds`` per context and records when and in which thread it ran."""

    def __init__(self, seconds: float = 0.3, fail_on: str | None = None):
        self.seconds, self.fail_on = seconds, fail_on
        self.calls: list[tuple[str, float, float, str]] = []  # context id, start, end, thread name
        self._running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, context: Context) -> list[SelfEdit]:
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
        start = time.monotonic()
        time.sleep(self.seconds)
        with self._lock:
            self._running -= 1
        self.calls.append((context.context_id, start, time.monotonic(), threading.current_thread().name))
        if context.context_id == self.fail_on:
            raise RuntimeError(f"the teacher failed on {context.context_id}")
        return [SELF_EDIT.model_copy(update={"context_id": context.context_id, "text": f"about {context.title}"})]


def _take_all(proposals: Proposals, work_s: float) -> tuple[list[str], list[tuple[float, float]]]:
    """Take every context's self-edits, then 'train and judge' each for ``work_s``: the ids and the work's spans."""
    taken, work = [], []
    for _ in CONTEXTS:
        taken += [e.context_id for e in proposals.take()]
        start = time.monotonic()
        time.sleep(work_s)
        work.append((start, time.monotonic()))
    return taken, work


def test_proposing_ahead_gives_the_same_self_edits_in_order_and_overlaps_the_work():
    alone, ahead = RecordingTeacher(), RecordingTeacher()
    in_turn, in_turn_work = _take_all(Proposals(alone, CONTEXTS, ahead=False), work_s=0.3)
    overlapped, work = _take_all(Proposals(ahead, CONTEXTS, ahead=True), work_s=0.3)
    assert in_turn == overlapped == [c.context_id for c in CONTEXTS]
    assert [c[0] for c in ahead.calls] == [c.context_id for c in CONTEXTS]  # sampled in order
    assert ahead.most_at_once == 1  # one context at a time: the sampler's seed and random state are its own
    assert {c[3] for c in ahead.calls[1:]} == {"propose-ahead"} and ahead.calls[0][3] != "propose-ahead"
    # Ahead, each next context's sampling starts while the last one's work is under way; in turn, only after it.
    assert all(call[1] < span[1] for call, span in zip(ahead.calls[1:], work, strict=False))
    assert all(call[1] >= span[1] for call, span in zip(alone.calls[1:], in_turn_work, strict=False))


def test_a_proposal_that_fails_ahead_is_raised_at_its_contexts_turn_not_before():
    teacher = RecordingTeacher(seconds=0.05, fail_on="c1")
    proposals = Proposals(teacher, CONTEXTS, ahead=True)
    assert [e.context_id for e in proposals.take()] == ["c0"]
    time.sleep(0.2)  # c1's sampling fails meanwhile, in the background
    with pytest.raises(RuntimeError, match="failed on c1"):
        proposals.take()
