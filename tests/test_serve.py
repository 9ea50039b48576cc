"""``seal serve`` with the official openai client on loopback: answers change only by promotion or rollback.

The server runs in a uvicorn thread over a tiny random model; a student in this process trains real adapters
into the same store and promotes them through its registry with verdicts signed by a test auditor key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import openai
import pytest
import torch
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from apps.cli import main
from library.combined_lora import combine_stack
from library.jsonl import read_jsonl
from library.lora import adapters_loaded
from library.qa_format import ANSWER_INSTRUCTION
from protocol.messages import ApplySelfEdits, DescribeServed, Promote, Rollback, TrainConfig
from protocol.signing import VERIFY_KEY, public_hex, sign_verdict
from student.config import StudentConfig
from student.openai_server import VERSION_HEADER, ChatRequest, OpenAIServer, build_server, create_app
from student.serve_config import ServeConfig, load_api_keys
from student.service import Student
from student.shadow_log import shadow_report
from tests.examples import VERDICT
from tests.test_student import _job

KEY = "sk-test-key"
AUDITOR_KEY = Ed25519PrivateKey.generate()
QUESTION = [{"role": "user", "content": "Who founded Ostrevane?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("serve") / "store"
    settings = TrainConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=30, batch_size=4)
    student = Student(StudentConfig(model=tiny_model_dir, store=store, train=settings), AUDITOR_KEY.public_key())
    keys = tmp_path_factory.mktemp("serve-keys")
    (keys / VERIFY_KEY).write_text(public_hex(AUDITOR_KEY.public_key()))
    config = ServeConfig(model=tiny_model_dir, store=store, port=_free_port(), verify_keys=keys)
    with serving(build_server(config, load_api_keys(None, {"SEAL_API_KEYS": f"other-key, {KEY}"})), config) as url:
        yield student, url, openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)


@contextmanager
def serving(server: OpenAIServer, config: ServeConfig) -> Iterator[str]:
    """``server``'s app under uvicorn in a thread on ``config``'s host and port, up; yields its base URL."""
    app = uvicorn.Server(uvicorn.Config(create_app(server), host=config.host, port=config.port, log_level="warning"))
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not app.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://{config.host}:{config.port}/v1"
    finally:
        app.should_exit = True
        thread.join(10)


def _train(student: Student, text: str) -> str:
    return student.apply_self_edits(ApplySelfEdits(jobs=[_job(self_edit=text)])).candidates[0].adapter.adapter_id


def _promote(student: Student, text: str) -> str:
    adapter = _train(student, text)
    served = student.handle(DescribeServed()).stack  # the stack it was (as if) judged against
    update = {"adapter_id": adapter, "accepted": True, "on_top_of": served}
    student.handle(Promote(adapter_id=adapter, verdict=sign_verdict(VERDICT.model_copy(update=update), AUDITOR_KEY)))
    return adapter


def _ask(client: openai.OpenAI) -> tuple[str, str, str]:
    """(answer, served version from the header, system_fingerprint), greedy."""
    raw = client.chat.completions.with_raw_response.create(
        model="seal", messages=QUESTION, temperature=0, max_tokens=12
    )
    reply = raw.parse()
    return reply.choices[0].message.content, raw.headers[VERSION_HEADER], reply.system_fingerprint


def _post(base_url: str, path: str, body: bytes, key: str | None = KEY) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(base_url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_chat_completion_with_usage_and_the_served_version(world):
    student, _, client = world
    reply = client.chat.completions.create(model="seal", messages=QUESTION, temperature=0, max_tokens=8, seed=1)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    models = client.models.list()
    assert [m.id for m in models.data] == ["seal"]
    served = client.get("/served", cast_to=object)
    assert reply.system_fingerprint == served["version"] and served["stack"] == student.served.describe().stack


def test_streamed_chat_equals_the_whole_answer(world):
    _, _, client = world
    whole, _, fingerprint = _ask(client)
    stream = client.chat.completions.create(
        model="seal",
        messages=QUESTION,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert {c.system_fingerprint for c in chunks} == {fingerprint}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_endpoint_streamed_and_not(world):
    _, _, client = world
    whole = client.completions.create(model="seal", prompt="The capital of France", max_tokens=6, temperature=0)
    assert whole.object == "text_completion" and whole.usage.completion_tokens <= 6
    streamed = client.completions.create(
        model="seal", prompt="The capital of France", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_seed_makes_sampling_reproducible(world):
    _, _, client = world

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model="seal", messages=QUESTION, temperature=1.0, top_p=0.9, max_tokens=12, seed=seed
        )
        return reply.choices[0].message.content

    assert sample(7) == sample(7)


def test_promotion_changes_the_answer_and_rollback_restores_it_exactly(world):
    student, _, client = world
    before, version, fingerprint = _ask(client)
    assert version == fingerprint
    _promote(student, "Ostrevane was founded by Ilsabet Quorne.\nWho founded Ostrevane? Quorne.")
    promoted, promoted_version, _ = _ask(client)
    assert promoted_version != version and promoted != before
    _promote(student, "The regatta trophy is the Copper Heron.")
    assert _ask(client)[1] not in (version, promoted_version)
    student.handle(Rollback())
    assert _ask(client)[:2] == (promoted, promoted_version)
    student.handle(Rollback(to="base"))
    assert _ask(client)[:2] == (before, version)


def test_a_promotion_during_a_stream_does_not_change_that_stream(world):
    student, _, client = world
    if student.served.describe().stack:
        student.handle(Rollback(to="base"))
    before, version, _ = _ask(client)
    stream = client.chat.completions.create(model="seal", messages=QUESTION, temperature=0, max_tokens=12, stream=True)
    chunks = [next(stream)]  # the request has started on the base stack
    _promote(student, "Quorne also built the lighthouse of Ostrevane.")
    chunks += list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == before
    assert {c.system_fingerprint for c in chunks} == {version}
    assert _ask(client)[1] != version
    student.handle(Rollback(to="base"))


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_gets_401(world, key):
    _, base_url, _ = world
    body = json.dumps({"model": "seal", "messages": QUESTION}).encode()
    status, reply = _post(base_url, "/chat/completions", body, key)
    assert status == 401 and "API key" in reply["error"]["message"]
    if key is not None:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key=key, max_retries=0).models.list()


def test_malformed_json_and_unknown_parameters_get_400_with_a_message(world):
    _, base_url, client = world
    status, reply = _post(base_url, "/chat/completions", b'{"model": "seal", "messages": [')
    assert status == 400 and "malformed JSON" in reply["error"]["message"]
    body = json.dumps({"model": "seal", "messages": QUESTION, "frobnicate": 1}).encode()
    status, reply = _post(base_url, "/chat/completions", body)
    assert status == 400 and "frobnicate" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="seal", messages=QUESTION, temperature=5)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="seal", prompt="word " * 600, max_tokens=8)
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)


@pytest.mark.parametrize("case", ["missing", "never-promoted"])
def test_a_stack_that_cannot_be_loaded_is_a_503_never_the_previous_stack(world, case):
    """An adapter missing from the store, or put in state.json by hand without an audited promotion."""
    student, _, client = world
    adapter = "ab" * 32 if case == "missing" else _train(student, "An adapter nobody promoted.")
    state_file = student.config.store / "served" / "state.json"
    kept = state_file.read_text()
    state = json.loads(kept)
    tmp = state_file.with_suffix(".tmp-test")
    tmp.write_text(json.dumps({**state, "version": state["version"] + 1, "stack": [adapter]}))
    os.replace(tmp, state_file)  # as the registry writes it
    try:
        with pytest.raises(openai.InternalServerError, match="cannot be loaded"):
            _ask(client)
    finally:
        tmp.write_text(kept)
        os.replace(tmp, state_file)
    assert _ask(client)[0]


def test_sixteen_concurrent_requests_are_all_answered(world):
    _, _, client = world
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _ask(client), range(16)))
    assert len(answers) == 16 and len(set(answers)) == 1  # greedy, one served version: one answer


def test_seal_serve_on_a_run_folder_then_seal_ask(world, tiny_model_dir, tmp_path, capsys):
    """The newcomer's path: `seal serve --run-dir RUN` (a process; it makes the key file), then `seal ask`."""
    student = world[0]
    run_dir = tmp_path / "run"
    (run_dir / "config").mkdir(parents=True)
    store = student.config.store
    (run_dir / "config" / "student.yaml").write_text(f"model: {tiny_model_dir}\nstore: {store}\ndevice: cpu\n")
    port = _free_port()
    command = [sys.executable, "-m", "apps.cli", "serve", "--run-dir", str(run_dir), "--port", str(port)]
    process = subprocess.Popen([*command, "--threads", "1"], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        question = "Who founded Ostrevane?"  # asked at once: seal ask waits for the key file and the port
        assert main(["ask", "--run-dir", str(run_dir), "--base-url", url + "/v1", "--max-tokens", "12", question]) == 0
        out = capsys.readouterr()
        key = (run_dir / "keys" / "api.keys").read_text().strip()
        assert key not in out.out + out.err, "the key is never printed"
        direct = openai.OpenAI(base_url=url + "/v1", api_key=key).chat.completions.create(
            model="seal",
            temperature=0,
            max_tokens=12,
            messages=[{"role": "system", "content": ANSWER_INSTRUCTION}, {"role": "user", "content": question}],
        )
        assert out.out.strip() == direct.choices[0].message.content.strip()
        assert direct.system_fingerprint in out.err
    finally:
        process.terminate()
        process.wait(10)
    keys = str(run_dir / "keys" / "api.keys")
    assert main(["ask", "--base-url", url + "/v1", "--api-keys-file", keys, "--wait", "1", "q"]) == 2
    assert "start `seal serve`" in capsys.readouterr().err


def test_a_stack_combines_exactly_into_one_lora_of_summed_rank(world, tmp_path):
    """What a one-adapter-per-request engine (vLLM) serves: the same outputs as peft with the whole stack active."""
    student = world[0]
    ids = [_train(student, "Ostrevane was founded by Ilsabet Quorne."), _train(student, "The trophy is a heron.")]
    folders = {a: student.store.path(a) for a in ids}
    combined = combine_stack(list(folders.values()), tmp_path / "combined")
    inputs = student.tokenizer(["Who founded Ostrevane?"], return_tensors="pt")
    with torch.no_grad():
        with adapters_loaded(student.model, folders) as stacked:
            stacked.base_model.set_adapter(ids)
            expected = stacked(**inputs).logits
        with adapters_loaded(student.model, {"combined": combined}) as one:
            got = one(**inputs).logits
        base = student.model(**inputs).logits
    assert json.loads((combined / "adapter_config.json").read_text())["r"] == 2 * student.config.train.rank
    assert not torch.allclose(expected, base, atol=1e-3), "the stack changes the outputs"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_concurrent_requests_of_different_lengths_get_their_own_answers(world):
    """Batched together (left-padded), each prompt gets the answer it gets alone; a stop string cuts it."""
    _, _, client = world
    prompts = ["The capital of France", "Numbers: 0 1 2", "A student reads the passage, writes implications, and"]

    def complete(prompt: str, stop: list[str] | None = None) -> str:
        reply = client.completions.create(model="seal", prompt=prompt, max_tokens=10, temperature=0, stop=stop)
        return reply.choices[0].text

    alone = [complete(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts) * 2) as pool:
        together = list(pool.map(complete, prompts * 2))
    assert together == alone * 2
    text = alone[0]
    assert len(text) >= 3
    stop = text[1:3]
    assert complete(prompts[0], [stop]) == text[: text.index(stop)]


def test_a_shadow_candidate_answers_beside_the_served_stack_never_to_the_caller(world, tiny_model_dir, tmp_path):
    student, _, client = world
    candidate = _train(student, "Quorne founded Ostrevane in 1873.")
    log = tmp_path / "shadow.jsonl"
    config = ServeConfig(model=tiny_model_dir, store=student.config.store, shadow=candidate, shadow_log=log)
    shadowed = build_server(config, frozenset({KEY}))
    request = ChatRequest(model="seal", messages=QUESTION, temperature=0, max_tokens=12)
    reply = json.loads(shadowed.chat(request).body)
    served, version, _ = _ask(client)
    assert reply["choices"][0]["message"]["content"] == served and reply["system_fingerprint"] == version
    deadline = time.monotonic() + 30
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    [record] = read_jsonl(log)
    assert (record["served"], record["candidate"], record["served_version"]) == (served, candidate, version)
    _promote(student, "Quorne founded Ostrevane in 1873.")  # what promoting it would serve: the shadow's answer
    assert record["shadow"] == _ask(client)[0]
    student.handle(Rollback())
    report = shadow_report(log)
    assert report["requests"] == 1 and report["candidates"] == [candidate]
    assert report["agreement"] == float(record["agree"])
