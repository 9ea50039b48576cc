"""The served stack as immutable versions for the HTTP endpoint: one model per stack, swapped only by the registry.

``seal serve`` reads the registry's ``state.json`` (never writes it); when the file changes (a promotion or
rollback by the student, or a registry in this process) the next request builds or reuses the model of the
new stack. A request takes one :class:`ServedVersion` when it starts and keeps it to its last token, so a
change never lands in the middle of an answer.

By default each non-empty stack runs on its own copy of the base model with every adapter of the stack
loaded through peft and active at once, the same computation as :class:`student.serving.ServedModel`
(``seal shadow``), so the endpoint's greedy answers are the student's; the base stack runs on the base
model itself. A version no request holds any more is freed with its copy. The vLLM backend passes a
loader of its own (:class:`student.served_vllm.VLLMStacks`: the stack as one LoRA).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from transformers import PreTrainedTokenizerBase

from library.ledger import read_entries
from library.lora import adapters_loaded
from protocol.artifacts import ArtifactStore
from protocol.canonical import short_id
from protocol.messages import Verdict
from protocol.signing import VerdictRefused, check_verdict
from student.registry import ServedState, read_served_state

log = logging.getLogger(__name__)


def served_version_id(base_model: str, stack: list[str]) -> str:
    """The served version: a hash of the base model's spec and the stack's adapter ids (content hashes), in order."""
    return short_id("seal-served-stack", base_model, *stack)


@dataclass
class ServedVersion:
    """One served stack and the model that answers with it; never changed once built."""

    version: str
    registry_version: int
    stack: list[str]
    verdicts: dict[str, str]
    model: Any  # a model (transformers) or a LoRA request (vLLM)
    _resources: ExitStack = field(default_factory=ExitStack, repr=False)


StackLoader = Callable[[dict[str, Path], str], tuple[Any, ExitStack]]
"""Builds what answers with a stack (adapter id -> folder, the version id): a model, or an engine's LoRA request."""


class ServedVersions:
    """The current :class:`ServedVersion`, rebuilt when the registry's ``state.json`` changes.

    ``model`` answers for the empty stack; ``loader`` builds a non-empty stack's (default: a peft copy).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        store: ArtifactStore,
        base: str,
        verify_key: Ed25519PublicKey | None = None,
        loader: StackLoader | None = None,
    ):
        self.base_model, self.tokenizer, self.store, self.base = model, tokenizer, store, base
        self.verify_key = verify_key
        self.loader = loader or self._peft_copy
        self._shadows: dict[tuple[str, str], tuple[Any, ExitStack]] = {}
        self.state_file = store.root / "served" / "state.json"
        self._lock = threading.Lock()  # one rebuild at a time; readers of `current` never wait for a request
        self._stamp: tuple[int, int, int] | None = None
        self._current: ServedVersion | None = None
        self._current = self._build(read_served_state(self.state_file.parent))
        self._stamp = self._file_stamp()

    def current(self) -> ServedVersion:
        """The version a request starting now is answered with (the registry's state, reloaded if it changed)."""
        if self._file_stamp() == self._stamp and self._current is not None:
            return self._current
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp or self._current is None:
                self._current = self._build(read_served_state(self.state_file.parent))
                self._stamp = stamp
            return self._current

    def _file_stamp(self) -> tuple[int, int, int] | None:
        # os.replace gives every new state.json a new inode: a change is seen even within one mtime tick.
        try:
            st = os.stat(self.state_file)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _build(self, state: ServedState) -> ServedVersion:
        version = served_version_id(self.base, state.stack)
        if self.verify_key is not None:
            check_stack_verdicts(self.state_file.parent / "history.jsonl", state.stack, self.verify_key)
        if self._current is not None and self._current.stack == state.stack:  # same weights, newer record
            model, resources = self._current.model, self._current._resources
        elif not state.stack:
            model, resources = self.base_model, ExitStack()
        else:
            folders = {a: self.store.path(a) for a in dict.fromkeys(state.stack)}  # present and intact
            model, resources = self.loader(folders, version)
        log.info("serving version %s: %d adapter(s) %s", version, len(state.stack), [a[:12] for a in state.stack])
        return ServedVersion(version, state.version, list(state.stack), dict(state.verdicts), model, resources)

    def with_candidate(self, served: ServedVersion, candidate: str) -> Any:
        """What would answer with ``candidate`` promoted on ``served``'s stack (built once per served version)."""
        with self._lock:
            key = (served.version, candidate)
            if key not in self._shadows:
                stack = [*served.stack, candidate]
                folders = {a: self.store.path(a) for a in dict.fromkeys(stack)}
                self._shadows = {key: self.loader(folders, served_version_id(self.base, stack))}  # only the latest
            return self._shadows[key][0]

    def _peft_copy(self, folders: dict[str, Path], version: str) -> tuple[Any, ExitStack]:
        """A copy of the base model with every adapter loaded and active at once (peft), as ``seal shadow`` answers.

        A copy per stack: requests still running on the previous stack keep their weights untouched.
        """
        resources = ExitStack()
        peft_model = resources.enter_context(adapters_loaded(copy.deepcopy(self.base_model), folders))
        peft_model.base_model.set_adapter(list(folders))
        return peft_model, resources


def check_stack_verdicts(history: Path, stack: list[str], key: Ed25519PublicKey) -> None:
    """Raise VerdictRefused unless every adapter of ``stack`` was promoted with its signed accepting verdict.

    The registry checked each verdict when it promoted; checking again here, against the registry's own
    history, means an edited ``state.json`` cannot put an unaudited adapter in front of callers.
    """
    promoted: dict[str, dict] = {}
    for entry in read_entries(history) if history.exists() else []:
        record = entry["record"]
        if entry["kind"] == "promote" and record.get("verdict") and record.get("after"):
            promoted[record["after"][-1]] = record["verdict"]
    for adapter in stack:
        if adapter not in promoted:
            raise VerdictRefused(f"adapter {adapter[:12]} is served but the registry history has no promotion of it")
        check_verdict(Verdict.model_validate(promoted[adapter]), key, adapter)
