"""The served model: base plus the promoted adapter stack, with promotion, rollback and shadow answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import adapters_loaded
from protocol.artifacts import ArtifactError, ArtifactStore
from protocol.codec import ProtocolError
from protocol.messages import (
    Answers,
    AnswerServed,
    DescribeServed,
    ModelAnswers,
    Promote,
    Rollback,
    ServedStack,
)
from protocol.signing import VerdictRefused
from student.answering import generate_answers
from student.registry import Registry, RegistryError


@contextmanager
def _refusals() -> Iterator[None]:
    """A refused promotion or rollback becomes a typed ``refused`` error; the served state is unchanged."""
    try:
        yield
    except (VerdictRefused, RegistryError) as exc:
        raise ProtocolError("refused", str(exc)) from None


class ServedModel:
    """Answers live questions with the promoted stack; changes it only through the registry."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        store: ArtifactStore,
        verify_key: Ed25519PublicKey | None,
        batch_size: int = 16,
    ):
        self.model, self.tokenizer, self.store = model, tokenizer, store
        self.registry = Registry(store.root / "served", verify_key)
        self.batch_size = batch_size

    def promote(self, request: Promote) -> ServedStack:
        """Serve the adapter on top of the stack: only on a valid, signed, accepting verdict for it."""
        self._stored(request.adapter_id, "adapter_id")  # present and intact before it is served
        with _refusals():
            self.registry.promote(request.adapter_id, request.verdict)
        return self.describe()

    def rollback(self, request: Rollback) -> ServedStack:
        """Drop the top adapter, or every adapter above ``request.to``."""
        with _refusals():
            self.registry.rollback(request.to)
        return self.describe()

    def describe(self, request: DescribeServed | None = None) -> ServedStack:
        """The served stack and the verdicts that admitted it."""
        state = self.registry.state
        return ServedStack(version=state.version, stack=state.stack, verdicts=state.verdicts)

    def answer(self, request: AnswerServed) -> Answers:
        """The served stack's answers, and with ``shadow`` the answers with that candidate on top."""
        stack = self.registry.state.stack
        results = [ModelAnswers(adapter_id=None, answers=self._answer(stack, request))]
        if request.shadow is not None:
            self._stored(request.shadow, "shadow")
            results.append(
                ModelAnswers(adapter_id=request.shadow, answers=self._answer([*stack, request.shadow], request))
            )
        return Answers(results=results)

    def _stored(self, adapter_id: str, field: str) -> None:
        """A typed refusal unless the adapter is in the store, intact; the caller never learns where the store is."""
        try:
            self.store.path(adapter_id)
        except ArtifactError:
            reason = f"adapter {adapter_id[:12]} is not in the student's store, or does not match its hash"
            raise ProtocolError("refused", reason, field) from None

    def _answer(self, stack: list[str], request: AnswerServed) -> list[str]:
        if not stack:
            return generate_answers(
                self.model, self.tokenizer, request.questions, request.max_new_tokens, self.batch_size
            )
        folders = {a: self.store.path(a) for a in dict.fromkeys(stack)}
        with adapters_loaded(self.model, folders) as peft_model:
            peft_model.base_model.set_adapter(list(folders))  # every adapter of the stack active at once
            return generate_answers(
                peft_model, self.tokenizer, request.questions, request.max_new_tokens, self.batch_size
            )
