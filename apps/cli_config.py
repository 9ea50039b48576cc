"""Configuration models as command-line flags: each field's description is its help.

Nested models become dotted flags (``--train.rank 16``). Values are handed to
pydantic as text, so validation errors name the flag and what would fix it.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from protocol.messages import TrainConfig
from teacher.prompts import PROMPTS


class ConfigError(Exception):
    """A configuration value that does not validate; the message names the flag."""


def add_config_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "") -> None:
    """One ``--flag`` per field of ``model`` (recursing into nested models)."""
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        if nested is not None:
            add_config_arguments(parser, nested, f"{prefix}{name}.")
            continue
        default = "none, required" if field.is_required() else field.get_default(call_default_factory=True)
        choices = literal_choices(field.annotation)
        parser.add_argument(
            f"--{prefix}{name}".replace("_", "-"),
            dest=f"cfg:{prefix}{name}",
            default=argparse.SUPPRESS,
            choices=choices,
            metavar=name.upper() if choices is None else None,
            help=f"{field.description or ''} (default: {default})",
        )


def literal_choices(annotation: Any) -> tuple[str, ...] | None:
    """The values of a ``Literal`` of strings (the flag's choices, taken from the type), else None."""
    if typing.get_origin(annotation) is not typing.Literal:
        return None
    values = typing.get_args(annotation)
    return values if all(isinstance(v, str) for v in values) else None


def build_config(model: type[BaseModel], args: argparse.Namespace) -> Any:
    """The validated config: the --config file (if any), then flags on top."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = _read_config_file(Path(args.config))
    for key, raw in vars(args).items():
        if key.startswith("cfg:"):
            _set_dotted(values, key[4:].split("."), _parse_value(raw))
    return validate_config(model, values)


def validate_config(model: type[BaseModel], values: dict[str, Any], prefix: str = "") -> Any:
    """``model`` validated from ``values``; a failure is one ConfigError naming the flag (``--PREFIXfield``)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise config_error(exc, prefix) from None


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first validation failure as a ConfigError naming the flag that would fix it."""
    err = exc.errors()[0]
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a check across fields: its message names the flags
        return ConfigError(message)
    flag = "--" + prefix + ".".join(str(p) for p in err["loc"]).replace("_", "-")
    return ConfigError(f"{flag}: {message}")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch CPU threads for the process (or, for a launcher, for each process it starts)."""
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads per process (default: torch's); 1 avoids oversubscription on a busy machine.",
    )


STUDENT_TRAINING = ("epochs", "learning_rate", "anchors", "anchor_loss")
"""The student settings a launcher's flags set for its run (``seal demo``, ``seal train-teacher``)."""


def add_student_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``--epochs``, ``--learning-rate``, ``--anchors``, ``--anchor-loss``: the student's training for the run.

    A flag not given leaves the student's own default.
    """
    defaults = TrainConfig()
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"Student epochs per candidate (default: {defaults.epochs})."
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None, help=f"Student learning rate (default: {defaults.learning_rate})."
    )
    parser.add_argument(
        "--anchors",
        type=int,
        default=None,
        help="Sequences of the base model's own answers to general questions trained beside each self-edit, "
        f"against forgetting (default: {defaults.anchors}).",
    )
    parser.add_argument(
        "--anchor-loss",
        choices=["tokens", "kl"],
        default=None,
        help="How anchors are trained: 'tokens' (cross-entropy on the base model's answer) or 'kl' (to the "
        f"model's own next-token distributions, nothing to memorise) (default: {defaults.anchor_loss}).",
    )


TEACHER_WRITING = ("format", "worked_example", "propose_ahead")
"""The teacher settings a launcher's flags set for its run: how self-edits are written, and when."""


def add_teacher_writing_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--worked-example``, ``--propose-ahead``: how and when the teacher writes self-edits."""
    parser.add_argument(
        "--format",
        choices=list(PROMPTS),
        default=None,
        help="Self-edit format the teacher writes (default: implications).",
    )
    parser.add_argument(
        "--worked-example",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Show the format once on a made-up passage before the real one (default: yes).",
    )
    parser.add_argument(
        "--propose-ahead",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Sample the next passage's self-edits while the student trains and the auditor judges this one's "
        "(default: no; the teacher then competes with them for the cores).",
    )


def teacher_writing(args: argparse.Namespace) -> dict[str, Any]:
    """The teacher settings given by :func:`add_teacher_writing_arguments`' flags."""
    return {name: getattr(args, name) for name in TEACHER_WRITING if getattr(args, name, None) is not None}


def student_training(args: argparse.Namespace) -> dict[str, Any]:
    """The student settings given by :func:`add_student_training_arguments`' flags."""
    return {name: getattr(args, name) for name in STUDENT_TRAINING if getattr(args, name, None) is not None}


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count, when one was given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _parse_value(raw: str) -> Any:
    """JSON lists and objects are parsed; everything else is left for pydantic to coerce."""
    if raw.startswith(("[", "{")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"cannot parse {raw!r} as JSON: {exc}") from None
    return raw


def _set_dotted(values: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        values = values.setdefault(part, {})
    values[path[-1]] = value


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data
