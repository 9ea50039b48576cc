"""``seal serve``: an OpenAI-compatible HTTP API (FastAPI) over the served stack, changed only by the registry.

    seal serve --run-dir runs/demo-<time>          # the demo's student model and store, on 127.0.0.1:8000
    seal serve --store runs/store --model PATH --api-keys-file api.keys --host 0.0.0.0

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (streamed as server-sent
events with ``"stream": true``), ``GET /v1/served`` (the stack and the ledger entries of its verdicts, for
``seal ledger show``) and ``GET /health`` (no key). Every answer names its served version in the
``X-Seal-Served-Version`` header and in ``system_fingerprint``.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerBase

from protocol.artifacts import ArtifactError
from protocol.signing import VerdictRefused, load_verify_key
from student.sampling import Generation, Sampler, SamplingParams
from student.serve_config import ServeConfig
from student.served_versions import ServedVersion, ServedVersions
from student.shadow_log import ShadowLog

log = logging.getLogger(__name__)
VERSION_HEADER = "X-Seal-Served-Version"
REGISTRY_VERSION_HEADER = "X-Seal-Registry-Version"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown parameter is a 400, never silently ignored


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str]


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


class OpenAIServer:
    """The routes, over the current served version; one :class:`Sampler` for all requests."""

    def __init__(
        self,
        config: ServeConfig,
        versions: ServedVersions,
        tokenizer: PreTrainedTokenizerBase,
        keys: frozenset[str],
        sampler: Sampler | None = None,
    ):
        self.config, self.versions, self.tokenizer = config, versions, tokenizer
        self.keys = [k.encode() for k in keys]
        self.sampler = sampler or Sampler(tokenizer)
        self.shadow = ShadowLog(config.shadow_log, config.shadow) if config.shadow else None
        self.started = int(time.time())

    def authorised(self, header: str | None) -> bool:
        """A bearer key from the accepted set (compared in constant time; never logged)."""
        scheme, _, key = (header or "").partition(" ")
        given = key.strip().encode()
        return scheme.lower() == "bearer" and any(hmac.compare_digest(given, k) for k in self.keys)

    def _served(self) -> ServedVersion:
        """The current served version; a stack that cannot be loaded is a 503 (the previous one is not served)."""
        try:
            return self.versions.current()
        except (ArtifactError, VerdictRefused, OSError, ValueError) as exc:
            log.error("the registry's served stack cannot be loaded: %s", exc)
            raise HTTPException(503, f"the served stack cannot be loaded: {exc}") from None

    def models(self) -> JSONResponse:
        served = self._served()
        card = {"id": self.config.served_model_name, "object": "model", "created": self.started, "owned_by": "seal"}
        return self._json({"object": "list", "data": [card]}, served)

    def served(self) -> JSONResponse:
        served = self._served()
        body = {
            "version": served.version,
            "registry_version": served.registry_version,
            "base_model": self.config.model,
            "stack": served.stack,
            "verdicts": served.verdicts,
        }
        return self._json(body, served)

    def chat(self, request: ChatRequest) -> Any:
        served = self._served()  # this request's stack, to its last token
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        max_tokens = request.max_completion_tokens or request.max_tokens
        generation, shadow = self._start(served, request, prompt, max_tokens)
        ids = _ids("chatcmpl")
        if request.stream:
            chunks = self._shadowed(served, prompt, _chat_chunks(ids, request, served, generation), shadow)
            return self._stream(served, generation, chunks)
        text = generation.text()  # first: the finish reason is known once the text is
        if shadow is not None:
            self.shadow.record(served.version, prompt, text, shadow)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": generation.finish_reason,
        }
        body = {**ids, "object": "chat.completion", "model": request.model, "choices": [choice]}
        return self._json({**body, "system_fingerprint": served.version, "usage": _usage(generation)}, served)

    def completion(self, request: CompletionRequest) -> Any:
        served = self._served()
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) != 1:
            raise HTTPException(400, "prompt: one prompt per request (send several requests)")
        generation, shadow = self._start(served, request, prompts[0], request.max_tokens)
        ids = _ids("cmpl")
        if request.stream:
            chunks = self._shadowed(served, prompts[0], _completion_chunks(ids, request, served, generation), shadow)
            return self._stream(served, generation, chunks)
        text = generation.text()  # first: the finish reason is known once the text is
        if shadow is not None:
            self.shadow.record(served.version, prompts[0], text, shadow)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": generation.finish_reason}
        body = {**ids, "object": "text_completion", "model": request.model, "choices": [choice]}
        return self._json({**body, "system_fingerprint": served.version, "usage": _usage(generation)}, served)

    def _start(
        self, served: ServedVersion, request: _Sampling, prompt: str, max_tokens: int | None
    ) -> tuple[Generation, Generation | None]:
        """The caller's generation, and with --shadow the candidate's on the same prompt and parameters."""
        if request.model != self.config.served_model_name:
            raise HTTPException(
                404,
                f"model {request.model!r} is not served; this endpoint serves "
                f"{self.config.served_model_name!r} (GET /v1/models)",
            )
        limit = self.config.max_tokens_limit
        if max_tokens is not None and max_tokens > limit:
            raise HTTPException(400, f"max_tokens: at most {limit} (the server's --max-tokens-limit)")
        stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
        params = SamplingParams(
            max_tokens=max_tokens or self.config.default_max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=stop,
        )
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        context = _context_length(self.tokenizer, served)
        if context is not None and len(prompt_ids) + params.max_tokens > context:
            raise HTTPException(
                400,
                f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({params.max_tokens}) exceed the "
                f"model's context of {context} tokens",
            )
        generation = self.sampler.generate(served.model, prompt_ids, params)
        if self.shadow is None:
            return generation, None
        try:
            candidate = self.versions.with_candidate(served, self.shadow.candidate)
        except Exception:  # the shadow never costs the caller an answer
            log.exception(
                "shadow candidate %s cannot be loaded; request %s answered alone",
                self.shadow.candidate[:12],
                served.version,
            )
            return generation, None
        return generation, self.sampler.generate(candidate, prompt_ids, params)

    def _shadowed(self, served: ServedVersion, prompt: str, chunks: Iterator[dict], shadow: Generation | None):
        if shadow is None:
            return chunks
        return self.shadow.watch(served.version, prompt, chunks, _chunk_text, shadow)

    def _stream(self, served: ServedVersion, generation: Generation, chunks: Iterator[dict]) -> StreamingResponse:
        def events() -> Iterator[str]:
            import json

            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(served))

    def _json(self, body: dict, served: ServedVersion) -> JSONResponse:
        return JSONResponse(body, headers=_headers(served))


def _context_length(tokenizer: PreTrainedTokenizerBase, served: ServedVersion) -> int | None:
    """The model's longest sequence (its config's positions, else the tokenizer's limit), if it says."""
    positions = getattr(getattr(served.model, "config", None), "max_position_embeddings", None)
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 10**8 else None  # "no limit" is huge
    return positions if isinstance(positions, int) else limit


def _chunk_text(chunk: dict) -> str:
    """The text a streamed chunk adds (chat or completion)."""
    if not chunk["choices"]:
        return ""
    choice = chunk["choices"][0]
    return choice.get("text") or choice.get("delta", {}).get("content") or ""


def _headers(served: ServedVersion) -> dict[str, str]:
    return {VERSION_HEADER: served.version, REGISTRY_VERSION_HEADER: str(served.registry_version)}


def _ids(prefix: str) -> dict[str, Any]:
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time())}


def _usage(generation: Generation) -> dict[str, int]:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chat_chunks(ids: dict, request: ChatRequest, served: ServedVersion, generation: Generation) -> Iterator[dict]:
    head = {**ids, "object": "chat.completion.chunk", "model": request.model, "system_fingerprint": served.version}
    yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    for delta in generation:
        yield {**head, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
    yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": generation.finish_reason}]}
    if request.stream_options and request.stream_options.include_usage:
        yield {**head, "choices": [], "usage": _usage(generation)}


def _completion_chunks(
    ids: dict, request: CompletionRequest, served: ServedVersion, generation: Generation
) -> Iterator[dict]:
    head = {**ids, "object": "text_completion", "model": request.model, "system_fingerprint": served.version}
    for delta in generation:
        yield {**head, "choices": [{"index": 0, "text": delta, "logprobs": None, "finish_reason": None}]}
    yield {**head, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": generation.finish_reason}]}
    if request.stream_options and request.stream_options.include_usage:
        yield {**head, "choices": [], "usage": _usage(generation)}


def create_app(server: OpenAIServer) -> FastAPI:
    """The FastAPI application: key check first (before the body is read), then the routes."""
    app = FastAPI(title="seal", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_key(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path.startswith("/v1") and not server.authorised(request.headers.get("authorization")):
            return _error(401, "missing or invalid API key (Authorization: Bearer KEY)", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        kind = first.get("type")
        message = "malformed JSON body" if kind == "json_invalid" else first.get("msg", "invalid request")
        if kind == "extra_forbidden":
            message = f"unknown parameter {param!r}"
        return _error(400, f"{message} ({param})" if param and kind != "extra_forbidden" else message, param=param)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {404: "not_found_error", 503: "server_error"}
        kind = kinds.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), kind)

    app.get("/health")(lambda: {"status": "ok"})
    app.get("/v1/models")(server.models)
    app.get("/v1/served")(server.served)
    app.post("/v1/chat/completions")(server.chat)
    app.post("/v1/completions")(server.completion)
    return app


def build_server(config: ServeConfig, keys: frozenset[str], engine: Any = None) -> OpenAIServer:
    """Load the base model (or the vLLM ``engine``) and the registry's current stack (heavy: once per process)."""
    from protocol.artifacts import ArtifactStore

    store = ArtifactStore(config.store, writer=False)
    verify_key = load_verify_key(config.verify_keys) if config.verify_keys else None
    if config.backend == "vllm":
        return _build_vllm_server(config, keys, engine, store, verify_key)
    from library.models import load_model

    model, tokenizer = load_model(config.model, config.device, config.dtype)
    versions = ServedVersions(model, tokenizer, store, config.model, verify_key)
    return OpenAIServer(config, versions, tokenizer, keys)


def _build_vllm_server(config: ServeConfig, keys: frozenset[str], engine: Any, store: Any, verify_key: Any):
    import tempfile
    from pathlib import Path

    from library.models import load_tokenizer
    from library.vllm_engine import build_engine
    from student.served_vllm import VLLMSampler, VLLMStacks

    tokenizer = load_tokenizer(config.model)
    engine = engine if engine is not None else build_engine(config.model, config.vllm)
    scratch = Path(tempfile.mkdtemp(prefix="seal-serve-vllm-"))  # combined stacks: derived, never in the store
    versions = ServedVersions(None, tokenizer, store, config.model, verify_key, loader=VLLMStacks(scratch))
    return OpenAIServer(config, versions, tokenizer, keys, VLLMSampler(engine, tokenizer))


def run(config: ServeConfig, keys: frozenset[str]) -> None:
    """Serve until interrupted (uvicorn; its access log has paths, never the Authorization header)."""
    import uvicorn

    server = build_server(config, keys)
    log.info(
        "serving %s (version %s) on http://%s:%d/v1",
        config.served_model_name,
        server.versions.current().version,
        config.host,
        config.port,
    )
    uvicorn.run(create_app(server), host=config.host, port=config.port, log_level="info")
