"""The LLM judge: the paper's yes/no protocol against a loopback OpenAI fake; failures are counted, never wrong."""

from __future__ import annotations

import pytest

from library.llm_judge import LLMJudge, parse_verdict
from teacher.backend_spec import build_backend
from teacher.config import TeacherConfig
from tests.fake_api import FAKE_KEY, FakeAPI


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes", True),
        ("yes.", True),
        (" **No**", False),
        ("no, it differs", False),
        ("Perhaps", None),
        ("", None),
        ("Yesterday", None),
        ("The answer is yes", None),
    ],
)
def test_only_a_leading_yes_or_no_is_a_verdict(reply, verdict):
    assert parse_verdict(reply) is verdict


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    with FakeAPI("openai") as server:
        yield server


def _judge(api, retries: int = 0) -> LLMJudge:  # one request at a time: the script is consumed in order
    config = TeacherConfig(model="openai:fake-model", base_url=api.base_url, api_retries=retries, api_concurrency=1)
    return LLMJudge(build_backend(config), batch_size=2)


def test_judge_grades_at_temperature_zero_and_reports_what_it_could_not_grade(api):
    items = [
        ("Who founded it?", ["Ilsabet Quorne"], "ilsabet quorne"),
        ("When?", ["1873"], "1874"),
        ("Where?", ["Ostrevane", "the town"], "The town"),
        ("What?", ["glass"], "?? glass"),
    ]
    judgements = _judge(api).grade(items)
    assert [j.correct for j in judgements] == [True, False, True, None]
    assert judgements[3].reply == "Perhaps, in part."
    bodies = api.generations()
    assert len(bodies) == 4 and all(b["temperature"] == 0.0 for b in bodies)


def test_failed_calls_and_refusals_are_failed_judgements_not_wrong_answers(api):
    api.script.extend(["500", "refusal"])  # batch 1 fails outright (no retries); batch 2's first is refused
    items = [("q1", ["a"], "a"), ("q2", ["b"], "b"), ("q3", ["c"], "c"), ("q4", ["d"], "d")]
    judgements = _judge(api).grade(items)
    assert [j.correct for j in judgements[:2]] == [None, None]
    assert judgements[0].reply.startswith("error:") and FAKE_KEY not in judgements[0].reply
    assert [j.correct for j in judgements[2:]] == [None, True]
    assert judgements[2].reply == "I can't help with that."
