"""Promotion needs the auditor's signed accepting verdict; rollback restores the served answers exactly;
a crash between the two writes of a promotion leaves a consistent state."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from library.ledger import Ledger, verify_ledger
from protocol.codec import ProtocolError
from protocol.messages import AnswerServed, ApplySelfEdits, DescribeServed, Promote, Rollback, TrainConfig
from protocol.signing import sign_verdict
from student.config import StudentConfig
from student.registry import Registry, RegistryError
from student.service import Student
from tests.examples import VERDICT
from tests.test_student import QUESTION, _job

AUDITOR_KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def student(tiny_model_dir, tmp_path_factory) -> Student:
    settings = TrainConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=30, batch_size=4)
    return Student(StudentConfig(model=tiny_model_dir, store=tmp_path_factory.mktemp("reg") / "store", train=settings),
                   AUDITOR_KEY.public_key())


def _candidate(student: Student, text: str) -> str:
    return student.apply_self_edits(ApplySelfEdits(jobs=[_job(self_edit=text)])).candidates[0].adapter.adapter_id


def _verdict(
    adapter_id: str, key: Ed25519PrivateKey = AUDITOR_KEY, accepted: bool = True, on_top_of: list[str] | None = None
):
    """A signed verdict on ``adapter_id``, judged on top of ``on_top_of`` (the stack it may be promoted onto)."""
    update = {"adapter_id": adapter_id, "accepted": accepted, "on_top_of": on_top_of or []}
    return sign_verdict(VERDICT.model_copy(update=update), key)


def _served(student: Student) -> list[str]:
    return student.handle(AnswerServed(questions=[QUESTION, "Where is it?"], max_new_tokens=12)).results[0].answers


def test_promote_then_rollback_restores_the_served_answers_exactly(student):
    before, version = _served(student), student.handle(DescribeServed()).version
    first = _candidate(student, "Ostrevane was founded by Ilsabet Quorne.\nWho founded Ostrevane? Quorne.")
    state = student.handle(Promote(adapter_id=first, verdict=_verdict(first)))
    assert state.stack[-1] == first and state.version == version + 1
    promoted = _served(student)
    assert promoted != before
    second = _candidate(student, "The regatta trophy is the Copper Heron.")
    student.handle(Promote(adapter_id=second, verdict=_verdict(second, on_top_of=[first])))
    assert student.handle(DescribeServed()).stack[-2:] == [first, second]
    assert student.handle(Rollback()).stack[-1] == first
    assert _served(student) == promoted
    assert student.handle(Rollback(to="base")).stack == []
    assert _served(student) == before
    assert verify_ledger(student.served.registry.history_path).ok


@pytest.mark.parametrize("attack", ["unsigned", "other-key", "other-adapter", "rejecting", "altered"])
def test_promotion_without_a_valid_accepting_verdict_is_refused(student, attack):
    adapter = _candidate(student, f"Attack {attack}.")
    other = _candidate(student, f"Another candidate for {attack}.")
    verdict = {
        "unsigned": VERDICT.model_copy(update={"adapter_id": adapter}),
        "other-key": _verdict(adapter, Ed25519PrivateKey.generate()),
        "other-adapter": _verdict(other),
        "rejecting": _verdict(adapter, accepted=False),
        "altered": _verdict(adapter).model_copy(update={"reward": 9.0}),
    }[attack]
    stack = student.handle(DescribeServed()).stack
    with pytest.raises(ProtocolError) as err:
        student.handle(Promote(adapter_id=adapter, verdict=verdict))
    assert err.value.reason == "refused"
    assert student.handle(DescribeServed()).stack == stack


def test_a_crash_between_the_two_writes_keeps_the_previous_state(student, monkeypatch, tmp_path):
    adapter = _candidate(student, "Crash test.")
    registry = Registry(tmp_path / "served", AUDITOR_KEY.public_key())

    def crash(_state):
        raise OSError("power lost")

    monkeypatch.setattr(registry, "_write_state", crash)
    with pytest.raises(OSError):
        registry.promote(adapter, _verdict(adapter))
    reopened = Registry(tmp_path / "served", AUDITOR_KEY.public_key())
    assert reopened.state.stack == []
    assert reopened.history_entries()[-1]["kind"] == "aborted"
    assert verify_ledger(reopened.history_path).ok
    reopened.promote(adapter, _verdict(adapter))
    assert Registry(tmp_path / "served", AUDITOR_KEY.public_key()).state.stack == [adapter]


def _history_kinds(registry: Registry) -> list[tuple[str, int]]:
    return [(e["kind"], e["record"]["version"]) for e in registry.history_entries()]


def test_a_failed_state_write_is_recorded_as_aborted_at_once(monkeypatch, tmp_path):
    adapter = "ab" * 32
    registry = Registry(tmp_path / "served", AUDITOR_KEY.public_key())
    real_write = registry._write_state
    calls = []

    def fail_once(state):
        calls.append(state.version)
        if len(calls) == 1:
            raise OSError("no space left on device")
        real_write(state)

    monkeypatch.setattr(registry, "_write_state", fail_once)
    with pytest.raises(OSError, match="no space"):
        registry.promote(adapter, _verdict(adapter))
    # At the time of failure: the history says the promotion was aborted, and nothing new is served.
    assert _history_kinds(registry) == [("promote", 1), ("aborted", 1)]
    assert registry.history_entries()[-1]["record"]["kept_version"] == 0
    assert registry.state.stack == [] and registry.state.version == 1
    assert verify_ledger(registry.history_path).ok
    # At the next start: the same story, recorded once, and the lost version number is not reused.
    reopened = Registry(tmp_path / "served", AUDITOR_KEY.public_key())
    assert (reopened.state.stack, reopened.state.version) == ([], 1)
    assert _history_kinds(reopened) == [("promote", 1), ("aborted", 1)]
    assert reopened.promote(adapter, _verdict(adapter)).version == 2


def test_an_abort_recorded_but_not_written_to_state_is_not_recorded_twice(monkeypatch, tmp_path):
    adapter = "cd" * 32
    registry = Registry(tmp_path / "served", AUDITOR_KEY.public_key())

    def crash(_state):
        raise OSError("disk gone")

    monkeypatch.setattr(registry, "_write_state", crash)  # the abort's own state write fails too
    with pytest.raises(OSError):
        registry.promote(adapter, _verdict(adapter))
    reopened = Registry(tmp_path / "served", AUDITOR_KEY.public_key())
    assert _history_kinds(reopened) == [("promote", 1), ("aborted", 1)]
    assert (reopened.state.stack, reopened.state.version) == ([], 1)


def test_a_change_while_another_writer_holds_the_history_is_refused_not_an_internal_error(tmp_path):
    adapter = "ef" * 32
    registry = Registry(tmp_path / "served", AUDITOR_KEY.public_key())
    with Ledger(registry.history_path), pytest.raises(RegistryError, match="another process") as refused:
        registry.promote(adapter, _verdict(adapter))
    assert str(tmp_path) not in str(refused.value), "no store path reaches the caller"
    assert registry.state.stack == [] and registry.history_entries() == []
    assert registry.promote(adapter, _verdict(adapter)).stack == [adapter]
