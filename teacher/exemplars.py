"""The exemplar bank: the auditor's best-rewarded self-edits, shown to an API teacher as in-context examples.

An API model's weights cannot be trained, so a round's lesson reaches the next round through its
prompt: the bank keeps the self-edits with the highest verdict rewards (accepted ones only) and
renders a few of them, each after its passage, above the usual self-edit instruction. The bank is
a versioned artifact: its JSON is canonical (sorted keys, fixed layout), its id is the sha256 of
those bytes, and :meth:`ExemplarBank.save` writes it under that id, so a teacher version can name
the exact bank it used (``exemplars-<first 12 hex digits>``) and a run can be replayed from files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from protocol.canonical import sha256_hex
from protocol.messages import Context, SelfEdit, SelfEditFormat, Verdict
from teacher.prompts import LABELS, self_edit_prompt

FORMAT_VERSION = 1


class Exemplar(BaseModel):
    """One rewarded self-edit with the passage it was written for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context_id: str
    title: str = ""
    passage: str
    format: SelfEditFormat
    text: str
    reward: float
    self_edit_id: str
    adapter_id: str = Field(description="The candidate the auditor judged (its verdict gives the reward).")
    teacher_version: str


class ExemplarBank(BaseModel):
    """The best ``capacity`` accepted self-edits so far, best first, one per context and format."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    capacity: int = Field(16, ge=1, le=1024)
    shown: int = Field(3, ge=0, le=32, description="Exemplars rendered into one prompt.")
    exemplars: list[Exemplar] = []

    # ------------------------------------------------------------------ keeping

    def add(self, context: Context, self_edits: Iterable[SelfEdit], verdicts: Iterable[Verdict]) -> int:
        """Keep the accepted, positively rewarded self-edits among these verdicts; returns how many entered."""
        by_id = {e.self_edit_id: e for e in self_edits}
        before = {e.self_edit_id for e in self.exemplars}
        for verdict in verdicts:
            edit = by_id.get(verdict.self_edit_id)
            if edit is None or not verdict.accepted or verdict.reward <= 0 or not edit.text.strip():
                continue
            self.exemplars.append(_exemplar(context, edit, verdict))
        self._prune()
        return len({e.self_edit_id for e in self.exemplars} - before)

    def insert(self, exemplars: Iterable[Exemplar]) -> None:
        """Add exemplars another filter chose (ReST^EM's), keeping the best per context and format."""
        self.exemplars.extend(exemplars)
        self._prune()

    def _prune(self) -> None:
        """Best reward first (ties: by id, so the order never depends on arrival); one per context and format."""
        best: dict[tuple[str, str], Exemplar] = {}
        for ex in sorted(self.exemplars, key=lambda e: (-e.reward, e.self_edit_id)):
            best.setdefault((ex.context_id, ex.format), ex)
        self.exemplars = list(best.values())[: self.capacity]

    # ------------------------------------------------------------------ rendering

    def chosen(self, context_id: str, fmt: SelfEditFormat) -> list[Exemplar]:
        """The exemplars shown for ``context_id``: the best of format ``fmt``, never that context's own."""
        return [e for e in self.exemplars if e.format == fmt and e.context_id != context_id][: self.shown]

    def prompt(self, context: Context, fmt: SelfEditFormat, worked_example: bool = True) -> str:
        """The self-edit instruction for ``context`` (:func:`self_edit_prompt`), preceded by the chosen exemplars.

        Real exemplars replace the made-up worked example; without any, it is shown if ``worked_example``.
        """
        examples = self.chosen(context.context_id, fmt)
        instruction = self_edit_prompt(context, fmt, worked_example and not examples)
        if not examples:
            return instruction
        label = LABELS.get(fmt, fmt)
        blocks = [
            f"Example {i}.\nPassage:\n{ex.title}\n{ex.passage}\n\n{label}:\n{ex.text}".replace("\n\n\n", "\n\n")
            for i, ex in enumerate(examples, 1)
        ]
        header = (
            f"Here are {len(examples)} examples of {label.lower()} written for other passages; a student "
            "that studied them learned its passage best. Write yours in the same style.\n\n"
        )
        return header + "\n\n".join(blocks) + "\n\nNow your turn.\n\n" + instruction

    # ------------------------------------------------------------------ as an artifact

    def to_json(self) -> str:
        """Canonical JSON: the same bank always gives the same bytes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @property
    def content_id(self) -> str:
        """sha256 of the canonical JSON."""
        return sha256_hex(self.to_json())

    @property
    def version(self) -> str:
        """A teacher-version label naming this bank: ``exemplars-<first 12 hex digits>``."""
        return f"exemplars-{self.content_id[:12]}"

    def save(self, folder: Path | str) -> Path:
        """Write ``folder/<content id>.json`` atomically (once: the name is the content); return its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{self.content_id}.json"
        if not final.exists():
            fd, tmp = tempfile.mkstemp(prefix=".exemplars-", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.to_json())
            os.replace(tmp, final)
        return final

    @classmethod
    def load(cls, path: Path | str) -> ExemplarBank:
        """Read a saved bank; a file whose name is a content id must match its bytes."""
        path = Path(path)
        raw = path.read_text(encoding="utf-8")
        if len(path.stem) == 64 and sha256_hex(raw) != path.stem:
            raise ValueError(f"{path}: the exemplar bank does not match its content id")
        return cls.model_validate_json(raw)


def _exemplar(context: Context, edit: SelfEdit, verdict: Verdict) -> Exemplar:
    return Exemplar(
        context_id=context.context_id,
        title=context.title,
        passage=context.text,
        format=edit.format,
        text=edit.text.strip(),
        reward=verdict.reward,
        self_edit_id=edit.self_edit_id,
        adapter_id=verdict.adapter_id,
        teacher_version=edit.teacher_version,
    )
