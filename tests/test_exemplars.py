"""The exemplar bank: what it keeps, how it renders into the teacher's prompt, and its content-hashed file."""

from __future__ import annotations

import pytest

from protocol.messages import Context, SamplingConfig, SelfEdit
from teacher.backends import Completion
from teacher.exemplars import ExemplarBank
from teacher.prompts import self_edit_prompt
from teacher.proposer import propose
from tests.examples import VERDICT


def _context(i: int) -> Context:
    return Context(context_id=f"c{i}", title=f"Town {i}", text=f"Town {i} was founded in {1800 + i} by person {i}.")


def _edit(context_id: str, n: int, fmt: str = "implications") -> SelfEdit:
    return SelfEdit(
        self_edit_id=f"{context_id}-e{n}",
        context_id=context_id,
        format=fmt,
        text=f"Implication {n} about {context_id}.\nAnother line.",
        prompt="p",
        teacher_model="openai:fake-model",
        teacher_version="v0",
    )


def _verdict(edit: SelfEdit, reward: float, accepted: bool = True):
    ids = {"context_id": edit.context_id, "self_edit_id": edit.self_edit_id}
    return VERDICT.model_copy(update={**ids, "reward": reward, "accepted": accepted})


def _bank(capacity: int = 16) -> ExemplarBank:
    bank = ExemplarBank(capacity=capacity, shown=2)
    for i, rewards in enumerate([(0.5, 0.9), (0.2, -0.1), (0.7, 0.0)]):
        edits = [_edit(f"c{i}", n) for n in range(len(rewards))]
        bank.add(_context(i), edits, [_verdict(e, r) for e, r in zip(edits, rewards, strict=True)])
    return bank


def test_keeps_the_best_accepted_self_edit_per_context_best_first():
    bank = _bank()
    assert [(e.self_edit_id, e.reward) for e in bank.exemplars] == [("c0-e1", 0.9), ("c2-e0", 0.7), ("c1-e0", 0.2)]
    edit = _edit("c3", 0)
    assert bank.add(_context(3), [edit], [_verdict(edit, 5.0, accepted=False)]) == 0, "rejected ones never enter"
    assert bank.add(_context(3), [edit], [_verdict(edit, 0.0)]) == 0, "no gain, no exemplar"


def test_capacity_drops_the_worst():
    assert [e.self_edit_id for e in _bank(capacity=2).exemplars] == ["c0-e1", "c2-e0"]


def test_the_prompt_shows_other_contexts_exemplars_then_the_instruction():
    bank = _bank()
    prompt = bank.prompt(_context(0), "implications")
    assert prompt.endswith(self_edit_prompt(_context(0), "implications", worked_example=False))
    assert "Harwick" not in prompt, "real exemplars replace the made-up worked example"
    assert "Implication 0 about c2." in prompt and "Implication 0 about c1." in prompt, "the best two of the others"
    assert "about c0" not in prompt, "a context never sees its own best self-edit"
    assert "Town 2 was founded in 1802" in prompt, "each exemplar follows its passage"
    assert bank.prompt(_context(0), "rewrite") == self_edit_prompt(_context(0), "rewrite"), "no rewrite exemplars"


def test_canonical_json_content_id_and_round_trip(tmp_path):
    bank = _bank()
    again = ExemplarBank(capacity=16, shown=2)
    for i, rewards in reversed(list(enumerate([(0.5, 0.9), (0.2, -0.1), (0.7, 0.0)]))):
        edits = [_edit(f"c{i}", n) for n in range(len(rewards))]
        again.add(_context(i), edits, [_verdict(e, r) for e, r in zip(edits, rewards, strict=True)])
    assert again.content_id == bank.content_id, "the id does not depend on the order rewards arrived in"
    assert bank.version == f"exemplars-{bank.content_id[:12]}"

    path = bank.save(tmp_path / "exemplars")
    assert path.name == f"{bank.content_id}.json"
    assert ExemplarBank.load(path) == bank
    path.write_text(path.read_text().replace("0.9", "9.9"))
    with pytest.raises(ValueError, match="content id"):
        ExemplarBank.load(path)


class _EchoBackend:
    model_id = "fake:echo"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def sample(self, prompts, n, sampling):
        return [[c.text for c in row] for row in self.complete(prompts, n, sampling)]

    def complete(self, prompts, n, sampling):
        self.prompts += prompts
        return [[Completion(f"line {i}") for i in range(n)] for _ in prompts]


def test_propose_puts_the_exemplars_in_the_prompt_it_records():
    backend, bank = _EchoBackend(), _bank()
    [[edit]] = propose(backend, [_context(5)], 1, "implications", SamplingConfig(), bank.version, exemplars=bank)
    assert backend.prompts == [edit.prompt] and "Example 1." in edit.prompt
    assert edit.teacher_version == bank.version
