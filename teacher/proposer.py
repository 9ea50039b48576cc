"""Turning contexts into typed self-edits with a teacher backend.

A completion the model refused is a failed proposal: it is logged and left out
(and handed to the caller's ``failures`` list), never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.canonical import short_id
from protocol.messages import Context, SamplingConfig, SelfEdit, SelfEditFormat, Usage
from teacher.backends import Completion, TeacherBackend
from teacher.prompts import self_edit_prompt

if TYPE_CHECKING:
    from teacher.config import TeacherConfig
    from teacher.exemplars import ExemplarBank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailedProposal:
    """A sample the teacher model declined to write: which context, which of the k, and why."""

    context_id: str
    index: int
    reason: str
    usage: Usage | None = None


def self_edit_id(context_id: str, teacher_version: str, text: str, index: int) -> str:
    """Stable id of one sampled self-edit."""
    return short_id(context_id, teacher_version, text, str(index))


def propose(
    backend: TeacherBackend,
    contexts: list[Context],
    k: int,
    fmt: SelfEditFormat,
    sampling: SamplingConfig,
    teacher_version: str,
    exemplars: ExemplarBank | None = None,
    failures: list[FailedProposal] | None = None,
    worked_example: bool = True,
) -> list[list[SelfEdit]]:
    """Up to ``k`` self-edits per context, sampled in one backend call.

    ``exemplars``: the best-rewarded self-edits of earlier rounds, shown in each prompt (never
    those for the same context). Refused samples are left out and appended to ``failures``.
    ``worked_example``: show the format once on a made-up passage first (:func:`self_edit_prompt`).
    """
    prompts = [
        self_edit_prompt(c, fmt, worked_example) if exemplars is None else exemplars.prompt(c, fmt, worked_example)
        for c in contexts
    ]
    completions = backend.complete(prompts, k, sampling)
    out: list[list[SelfEdit]] = []
    for context, prompt, row in zip(contexts, prompts, completions, strict=True):
        edits: list[SelfEdit] = []
        for i, completion in enumerate(row):
            if completion.refusal is not None:
                _report_refusal(backend, context, i, completion, failures)
                continue
            edits.append(_self_edit(backend, context, prompt, completion, i, fmt, sampling, teacher_version))
        out.append(edits)
    return out


def _self_edit(
    backend: TeacherBackend,
    context: Context,
    prompt: str,
    completion: Completion,
    index: int,
    fmt: SelfEditFormat,
    sampling: SamplingConfig,
    teacher_version: str,
) -> SelfEdit:
    return SelfEdit(
        self_edit_id=self_edit_id(context.context_id, teacher_version, completion.text, index),
        context_id=context.context_id,
        format=fmt,
        text=completion.text,
        prompt=prompt,
        teacher_model=backend.model_id,
        teacher_version=teacher_version,
        sampling=sampling,
        usage=completion.usage,
    )


def _report_refusal(
    backend: TeacherBackend,
    context: Context,
    index: int,
    completion: Completion,
    failures: list[FailedProposal] | None,
) -> None:
    reason = completion.refusal or "refused"
    log.warning("%s declined to propose self-edit %d for %s: %s", backend.model_id, index, context.context_id, reason)
    if failures is not None:
        failures.append(FailedProposal(context.context_id, index, reason, completion.usage))


def passage_only(context: Context, teacher_version: str) -> SelfEdit:
    """The empty self-edit: the student trains on the passage alone (the paper's baseline)."""
    return SelfEdit(
        self_edit_id=self_edit_id(context.context_id, teacher_version, "", 0),
        context_id=context.context_id,
        format="passage_only",
        text="",
        prompt="",
        teacher_model="none",
        teacher_version=teacher_version,
    )


def proposer_for(
    backend: TeacherBackend, config: TeacherConfig, teacher_version: str, exemplars: ExemplarBank | None = None
) -> Callable[[Context], list[SelfEdit]]:
    """What the adaptation pass asks for each context: ``config.k`` self-edits in ``config.format``."""

    def propose_for(context: Context) -> list[SelfEdit]:
        edits = propose(
            backend,
            [context],
            config.k,
            config.format,
            config.sampling,
            teacher_version,
            exemplars,
            worked_example=config.worked_example,
        )
        return edits[0]

    return propose_for
