"""Turning contexts into typed self-edits with a teacher backend."""

from __future__ import annotations

import hashlib

from protocol.messages import Context, SamplingSettings, SelfEdit, SelfEditFormat
from teacher.backends import TeacherBackend
from teacher.prompts import self_edit_prompt


def self_edit_id(context_id: str, teacher_version: str, text: str, index: int) -> str:
    """Stable id of one sampled self-edit."""
    key = "\0".join([context_id, teacher_version, text, str(index)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def propose(
    backend: TeacherBackend,
    contexts: list[Context],
    k: int,
    fmt: SelfEditFormat,
    sampling: SamplingSettings,
    teacher_version: str,
) -> list[list[SelfEdit]]:
    """``k`` self-edits per context, sampled in one backend call."""
    prompts = [self_edit_prompt(c, fmt) for c in contexts]
    completions = backend.sample(prompts, k, sampling)
    return [
        [
            SelfEdit(
                self_edit_id=self_edit_id(context.context_id, teacher_version, text, i),
                context_id=context.context_id,
                format=fmt,
                text=text,
                prompt=prompt,
                teacher_model=backend.model_id,
                teacher_version=teacher_version,
                sampling=sampling,
            )
            for i, text in enumerate(texts)
        ]
        for context, prompt, texts in zip(contexts, prompts, completions, strict=True)
    ]


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
