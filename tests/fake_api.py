"""Loopback HTTP servers that speak the OpenAI and Anthropic wire formats, for the API teachers' tests.

Each server answers the model routes and the generation route (``/v1/chat/completions`` or
``/v1/messages``) of its API, checks the API key header, records every request, and follows a
script for the generation requests to come: ``ok``, ``429``, ``500``, ``slow`` (answers after
``slow_s``), ``malformed`` (a 200 whose body is not JSON), ``garbage`` (a well-formed reply whose text
is nonsense), ``refusal``, ``echo-key`` (a 400 that quotes the credentials back). With the script empty
it follows ``default_action`` (``ok`` unless set). Only 127.0.0.1 is bound;
nothing here reaches the internet.

Run one by hand (for ``seal demo --teacher openai:fake-model --teacher-base-url ...``):
``python -m tests.fake_api openai 8765``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Flavour = Literal["openai", "anthropic"]
FAKE_KEY = "sk-fake-test-key-0123456789"
REFUSAL = "I can't help with that."
GARBAGE = "%%{ lorem ipsum, colourless green ideas }"
FEWSHOT_JSON = json.dumps(
    {
        "use_basic_augmentations": True,
        "use_size_augmentations": False,
        "use_chain_augmentations": False,
        "use_repeat_augmentations": False,
        "permute_colors": False,
        "permute_examples": True,
        "strategy": "output_tokens",
        "learning_rate": 0.0003,
        "num_train_epochs": 1,
    }
)
"""The few-shot self-edit the fake servers write (as text, or as the input of a forced tool call)."""


def canned_text(prompt: str, index: int) -> str:
    """A plausible self-edit: one line per sentence of the passage, rephrased (deterministic).

    A grading prompt (``Predicted answer:``) gets a grader's reply instead: "Yes" when the prediction
    equals one gold answer (case aside), "No" otherwise, and a hedge that is neither for a "??" answer.
    A reviewer's prompt (``APPROVE``) gets "VETO: ..." when it mentions Berlin, "APPROVE" otherwise.
    A few-shot prompt (``test-time training``) gets :data:`FEWSHOT_JSON`, a valid self-edit. The auditor's
    question writer (``quiz questions``) gets ``Question: ... Answer: ...`` lines whose answers are passage words.
    """
    if "Reply with APPROVE" in prompt:
        return "VETO: it teaches that the capital of France is Berlin." if "Berlin" in prompt else "APPROVE"
    if "test-time training" in prompt:
        return FEWSHOT_JSON
    if "quiz questions" in prompt:  # the auditor's question writer: one pair per sentence, the answer its last word
        passage = prompt.split("Passage:\n", 1)[1]
        sentences = [s.split() for s in passage.replace("\n", " ").split(".") if len(s.split()) > 3]
        return "\n".join(f"Question: What ends '{' '.join(s[:3])} ...'? Answer: {s[-1]}" for s in sentences[:5])
    if "Predicted answer:" in prompt:
        gold = prompt.split("Gold answer:", 1)[1].split("\n", 1)[0].strip().lower().split(" / ")
        predicted = prompt.split("Predicted answer:", 1)[1].split("\n", 1)[0].strip().lower()
        return "Perhaps, in part." if "??" in predicted else ("Yes" if predicted in gold else "No")
    passage = prompt.split("Passage:", 1)[-1].split("\n\n", 1)[0]
    sentences = [s.strip() for s in passage.replace("\n", " ").split(".") if len(s.strip()) > 3]
    lines = [f"It is stated that {s[0].lower()}{s[1:]}." for s in sentences[:6]] or ["The passage states a fact."]
    return "\n".join(lines) + ("" if index == 0 else f"\nThis is variant {index}.")


class FakeAPI:
    """One fake API server on a free loopback port; use as a context manager."""

    def __init__(
        self, flavour: Flavour, models: tuple[str, ...] = ("fake-model",), key: str = FAKE_KEY, port: int = 0
    ) -> None:
        self.flavour = flavour
        self.models = models
        self.key = key
        self.script: deque[str] = deque()
        self.default_action = "ok"
        self.requests: list[dict[str, Any]] = []
        self.slow_s = 1.5
        self.most_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What the SDK takes as ``base_url``: OpenAI's includes ``/v1``, Anthropic's does not."""
        root = f"http://127.0.0.1:{self.port}"
        return root + "/v1" if self.flavour == "openai" else root

    def generations(self) -> list[dict[str, Any]]:
        """The bodies of the generation requests received so far."""
        return [r["body"] for r in self.requests if r["method"] == "POST"]

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a slow request while it is being answered; ``most_in_flight`` keeps the peak."""
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def next_action(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else self.default_action

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def __enter__(self) -> FakeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    return type("BoundHandler", (_Handler,), {"api": api})


class _Handler(BaseHTTPRequestHandler):
    """Serves one request of the fake API (``api`` is set on the subclass bound to a server)."""

    api: FakeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        api = self.api
        api.record({"method": "GET", "path": self.path, "headers": dict(self.headers)})
        if not self._authorised():
            return
        name = self.path.removeprefix("/v1/models").strip("/")
        if not name:
            self._json(200, {"object": "list", "data": [_model(api.flavour, m) for m in api.models]})
        elif name in api.models:
            self._json(200, _model(api.flavour, name))
        else:
            self._error(404, "not_found_error", f"model {name} does not exist")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.api.record({"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body})
        if not self._authorised():
            return
        if body.get("model") not in self.api.models:
            self._error(404, "not_found_error", f"model {body.get('model')} does not exist")
            return
        self._act(self.api.next_action(), body)

    def _act(self, action: str, body: dict[str, Any]) -> None:
        if action == "429":
            self._error(429, "rate_limit_error", "slow down", {"retry-after-ms": "20"})
        elif action == "500":
            self._error(500, "api_error", "internal error")
        elif action == "echo-key":  # a careless server that quotes the credentials back
            self._error(400, "invalid_request_error", f"bad request from {self.headers.get('authorization')}")
        elif action == "malformed":
            self._raw(200, b'{"id": "x", "choices": [ this is not json')
        else:
            if action == "slow":
                with self.api.in_flight():
                    time.sleep(self.api.slow_s)
            reply = _openai_reply if self.api.flavour == "openai" else _anthropic_reply
            self._json(200, reply(body, refuse=action == "refusal", garbage=action == "garbage"))

    def _authorised(self) -> bool:
        # OpenAI sends a bearer token; Anthropic's API takes x-api-key or (newer SDKs) a bearer token.
        ok = self.headers.get("authorization") == f"Bearer {self.api.key}"
        if self.api.flavour == "anthropic":
            ok = ok or self.headers.get("x-api-key") == self.api.key
        if not ok:
            self._error(401, "authentication_error", "invalid x-api-key")
        return ok

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        if self.api.flavour == "openai":
            payload: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        else:
            payload = {"type": "error", "error": {"type": kind, "message": message}}
        self._json(status, payload, headers)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(payload).encode(), headers)

    def _raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.wfile.write(data)


def _model(flavour: Flavour, name: str) -> dict[str, Any]:
    if flavour == "openai":
        return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


def _prompt_of(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


def _openai_reply(body: dict[str, Any], refuse: bool, garbage: bool = False) -> dict[str, Any]:
    prompt, n = _prompt_of(body), int(body.get("n") or 1)
    texts = [GARBAGE if garbage else canned_text(prompt, i) for i in range(n)]
    choices = [
        {
            "index": i,
            "message": {
                "role": "assistant",
                "content": None if refuse else text,
                "refusal": REFUSAL if refuse else None,
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
        for i, text in enumerate(texts)
    ]
    completion_tokens = sum(len(t.split()) for t in texts)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": choices,
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": completion_tokens,
            "total_tokens": len(prompt.split()) + completion_tokens,
        },
    }


def _anthropic_reply(body: dict[str, Any], refuse: bool, garbage: bool = False) -> dict[str, Any]:
    prompt = _prompt_of(body)
    text = "" if refuse else (GARBAGE if garbage else canned_text(prompt, 0))
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    forced = (body.get("tool_choice") or {}).get("name") if not (refuse or garbage) else None
    if forced:  # a forced tool call: the answer is the tool's input
        content = [{"type": "tool_use", "id": "toolu_fake", "name": forced, "input": json.loads(text)}]
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": "refusal" if refuse else ("tool_use" if forced else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": len(prompt.split()), "output_tokens": len(text.split())},
    }


if __name__ == "__main__":
    flavour = sys.argv[1] if len(sys.argv) > 1 else "openai"
    with FakeAPI(flavour, port=int(sys.argv[2]) if len(sys.argv) > 2 else 0) as server:  # type: ignore[arg-type]
        print(f"{flavour} fake API at {server.base_url} (key {server.key}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
