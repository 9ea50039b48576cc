"""The OpenAI and Anthropic teachers against loopback servers speaking each API's wire format."""

from __future__ import annotations

import logging
import time

import pytest

from library.anthropic_backend import AnthropicTeacher
from library.api_common import APIConfig
from library.backend_errors import BackendRequestError, BackendUnavailable
from library.openai_backend import OpenAITeacher
from protocol.messages import Context, SamplingConfig
from teacher.proposer import FailedProposal, propose
from tests.fake_api import FAKE_KEY, REFUSAL, FakeAPI

FLAVOURS = ["openai", "anthropic"]
KEY_VARIABLE = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
SAMPLING = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=64, seed=1)
CONTEXTS = [
    Context(context_id=f"c{i}", title=f"Town {i}", text=f"Town {i} was founded in {1800 + i}. It has {i} bridges.")
    for i in range(3)
]


@pytest.fixture(params=FLAVOURS)
def server(request, monkeypatch):
    for variable in KEY_VARIABLE.values():
        monkeypatch.setenv(variable, FAKE_KEY)
    with FakeAPI(request.param) as api:
        yield api


def _teacher(api: FakeAPI, **overrides):
    settings = APIConfig(
        **{"model": "fake-model", "base_url": api.base_url, "timeout_s": 5.0, "retries": 2, **overrides}
    )
    return (OpenAITeacher if api.flavour == "openai" else AnthropicTeacher)(settings)


def _retry_counts(api: FakeAPI) -> list[str]:
    return [r["headers"].get("x-stainless-retry-count", "?") for r in api.requests if r["method"] == "POST"]


def test_k_samples_per_prompt_with_usage_and_cost(server):
    teacher = _teacher(server, prices=(1.0, 2.0))
    rows = teacher.complete(["Passage:\nA is B. C is D.\n\nImplications:"] * 3, 2, SAMPLING)
    assert [len(r) for r in rows] == [2, 2, 2]
    assert all(c.text.startswith("It is stated that") and c.refusal is None for r in rows for c in r)
    usage = rows[0][0].usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.estimated_cost_usd == pytest.approx((usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6)
    bodies = server.generations()
    if server.flavour == "openai":
        assert len(bodies) == 3 and all(b["n"] == 2 and b["seed"] == 1 for b in bodies), "one request per prompt"
        prompt_tokens = len(bodies[0]["messages"][0]["content"].split())
        assert sum(c.usage.input_tokens for c in rows[0]) == prompt_tokens, "the prompt's tokens are shared"
    else:
        assert len(bodies) == 6 and all(b["max_tokens"] == 64 and "temperature" not in b for b in bodies)


def test_known_models_get_a_list_price(server):
    assert _teacher(server)._prices is None, "fake-model has no list price: its cost is unknown, not zero"
    server.models = ("gpt-4o-mini", "claude-sonnet-4-20250514")
    model = "gpt-4o-mini" if server.flavour == "openai" else "claude-sonnet-4-20250514"
    assert _teacher(server, model=model)._prices is not None


def test_rate_limits_and_server_errors_are_retried_with_backoff(server):
    server.script.extend(["429", "500"])
    started = time.monotonic()
    [[completion]] = _teacher(server).complete(["Passage:\nX is Y.\n\nImplications:"], 1, SAMPLING)
    assert completion.text and _retry_counts(server) == ["0", "1", "2"]
    assert time.monotonic() - started >= 0.3, "the 500 was retried after a backoff, not at once"


def test_a_persistent_server_error_is_one_line_after_the_retries(server):
    server.script.extend(["500"] * 2)
    with pytest.raises(BackendRequestError) as caught:
        _teacher(server, retries=1).complete(["p"], 1, SAMPLING)
    message = str(caught.value)
    assert "HTTP 500" in message and "1 retry" in message and "\n" not in message
    assert len(server.generations()) == 2


def test_a_slow_answer_is_retried_then_reported_with_the_setting_to_change(server):
    server.slow_s = 0.6
    server.script.append("slow")
    [[completion]] = _teacher(server, timeout_s=0.3, retries=1).complete(["p"], 1, SAMPLING)
    assert completion.text and _retry_counts(server) == ["0", "1"]

    server.script.extend(["slow", "slow"])
    with pytest.raises(BackendRequestError, match=r"no answer within 0.3 s.*--api-timeout-s"):
        _teacher(server, timeout_s=0.3, retries=1).complete(["p"], 1, SAMPLING)


def test_a_malformed_answer_is_a_clear_error(server):
    server.script.append("malformed")
    with pytest.raises(BackendRequestError, match="could not be read"):
        _teacher(server).complete(["p"], 1, SAMPLING)


def test_a_refusal_is_a_failed_proposal_not_a_crash(server):
    server.script.append("refusal")  # the first request declines: all k of context 0 (openai), one (anthropic)
    failures: list[FailedProposal] = []
    teacher = _teacher(server, concurrency=1)  # one request at a time: the first to arrive is context 0's
    edits = propose(teacher, CONTEXTS, 2, "implications", SAMPLING, "v0", failures=failures)
    refused = 2 if server.flavour == "openai" else 1
    assert [len(e) for e in edits] == [2 - refused, 2, 2]
    assert [f.context_id for f in failures] == ["c0"] * refused
    assert all(f.reason == REFUSAL or "refusal" in f.reason for f in failures)
    edit = edits[1][0]
    assert edit.teacher_model == f"{server.flavour}:fake-model" and edit.usage and edit.usage.output_tokens > 0


def test_sample_gives_texts_and_an_empty_text_for_a_refusal(server):
    server.script.append("refusal")
    texts = _teacher(server, concurrency=1).sample(["p", "q"], 1, SAMPLING)
    assert texts[0] == [""] and texts[1][0]


def test_a_missing_key_is_reported_before_any_request(server, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE[server.flavour])
    with pytest.raises(BackendUnavailable, match=KEY_VARIABLE[server.flavour]):
        _teacher(server)
    assert server.requests == []


@pytest.mark.parametrize("problem", ["wrong key", "unreachable", "unknown model"])
def test_setup_problems_are_one_line_before_any_generation(server, monkeypatch, problem):
    overrides: dict = {"retries": 0}
    expected = {"wrong key": "API key was rejected", "unreachable": "cannot connect", "unknown model": "fake-mdoel"}
    if problem == "wrong key":
        monkeypatch.setenv(KEY_VARIABLE[server.flavour], "sk-wrong")
    elif problem == "unreachable":
        overrides["base_url"] = "http://127.0.0.1:9/v1"
    else:
        overrides["model"] = "fake-mdoel"
    with pytest.raises(BackendUnavailable) as caught:
        _teacher(server, **overrides)
    assert expected[problem] in str(caught.value) and "\n" not in str(caught.value)
    assert server.generations() == []


def test_the_key_is_never_in_an_error_or_a_log_line(server, caplog):
    caplog.set_level(logging.DEBUG)
    teacher = _teacher(server, retries=0)
    teacher.complete(["p"], 1, SAMPLING)
    server.script.append("echo-key")
    with pytest.raises(BackendRequestError) as caught:
        teacher.complete(["p"], 1, SAMPLING)
    assert "***" in str(caught.value) and FAKE_KEY not in str(caught.value)
    assert FAKE_KEY not in caplog.text
    assert FAKE_KEY not in repr(teacher.settings)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_requests_run_concurrently_up_to_the_limit(server, concurrency):
    server.slow_s = 1.0 if concurrency > 1 else 0.1  # long enough for four requests to meet under any load
    server.script.extend(["slow"] * 4)
    _teacher(server, concurrency=concurrency).complete(["a", "b", "c", "d"], 1, SAMPLING)
    assert server.most_in_flight == concurrency
