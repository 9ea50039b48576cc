"""Few-shot self-edits in each API's structured-output mode, against loopback servers speaking its wire format.

The requests must carry the self-edit's JSON schema (OpenAI: ``response_format`` json_schema, strict;
Anthropic: a tool whose ``input_schema`` it is, forced by ``tool_choice``), and the answers must validate.
"""

from __future__ import annotations

import pytest

from library.anthropic_backend import TOOL_NAME, AnthropicTeacher
from library.api_common import APIConfig
from library.openai_backend import SCHEMA_NAME, OpenAITeacher
from protocol.fewshot import ArcPair, ArcTask
from protocol.messages import SamplingConfig
from teacher.fewshot import SELF_EDIT_SCHEMA, propose_fewshot
from tests.fake_api import FAKE_KEY, FakeAPI

TASK = ArcTask(task_id="t1", train=[ArcPair(input=[[1, 0]], output=[[0, 1]])], test_inputs=[[[2, 0]]])
SAMPLING = SamplingConfig(temperature=0.7, max_new_tokens=160)


@pytest.fixture(params=["openai", "anthropic"])
def server(request, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    with FakeAPI(request.param) as api:
        yield api


def _teacher(api: FakeAPI):
    settings = APIConfig(model="fake-model", base_url=api.base_url, timeout_s=5.0, retries=0)
    return (OpenAITeacher if api.flavour == "openai" else AnthropicTeacher)(settings)


def _schema_sent(api: FakeAPI, body: dict) -> dict | None:
    """The JSON schema a generation request asked the answer to follow, in this API's form (None: none)."""
    if api.flavour == "openai":
        response_format = body.get("response_format")
        if response_format is None:
            return None
        assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
        assert response_format["json_schema"]["name"] == SCHEMA_NAME
        return response_format["json_schema"]["schema"]
    if "tools" not in body:
        return None
    [tool] = body["tools"]
    assert tool["name"] == TOOL_NAME and body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    return tool["input_schema"]


def test_structured_requests_carry_the_self_edit_schema_and_their_answers_validate(server):
    [proposals] = propose_fewshot(_teacher(server), [TASK], 2, SAMPLING, "v0", max_attempts=1)
    assert all(p.self_edit is not None and p.error is None for p in proposals)
    bodies = server.generations()
    assert len(bodies) == (1 if server.flavour == "openai" else 2)  # OpenAI: n=2 in one request
    assert all(_schema_sent(server, body) == SELF_EDIT_SCHEMA for body in bodies)


def test_without_structured_outputs_the_requests_are_plain(server):
    [proposals] = propose_fewshot(_teacher(server), [TASK], 1, SAMPLING, "v0", max_attempts=1, structured=False)
    assert proposals[0].self_edit is not None  # the fake writes valid JSON as text too
    assert [_schema_sent(server, body) for body in server.generations()] == [None]
