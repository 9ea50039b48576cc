"""The student's request handler: one base model, many candidate adapters.

Entry point: ``seal student --bind tcp://127.0.0.1:5555``.
"""

from __future__ import annotations

import logging
import shutil

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.artifacts import ArtifactStore
from protocol.codec import ProtocolError
from protocol.messages import (
    AnswerQuestions,
    Answers,
    AnswerServed,
    ApplySelfEdits,
    Body,
    Candidate,
    CandidatesTrained,
    DescribeServed,
    DescribeStudent,
    ModelAnswers,
    Promote,
    Rollback,
    StudentInfo,
)
from seal.lora import adapters_loaded
from seal.models import load_model
from student.answering import generate_answers
from student.config import StudentConfig
from student.serving import ServedModel
from student.training import train_adapter

log = logging.getLogger(__name__)


class Student:
    """Applies self-edits as LoRA candidates and answers questions with the base model or a candidate."""

    def __init__(self, config: StudentConfig, verify_key: Ed25519PublicKey | None = None):
        self.config = config
        self.model, self.tokenizer = load_model(config.model, config.device)
        self.store = ArtifactStore(config.store)
        self.served = ServedModel(self.model, self.tokenizer, self.store, verify_key, config.answer_batch_size)
        self._base_answers: dict[tuple[str, int], str] = {}  # (question, max_new_tokens) -> answer

    def handle(self, request: Body) -> Body:
        """Dispatch one request body to its method."""
        if isinstance(request, ApplySelfEdits):
            return self.apply_self_edits(request)
        if isinstance(request, AnswerQuestions):
            return self.answer_questions(request)
        if isinstance(request, DescribeStudent):
            return StudentInfo(
                base_model=self.config.model, device=str(self.model.device), default_settings=self.config.train
            )
        if isinstance(request, Promote | Rollback | DescribeServed | AnswerServed):
            return self.served.handle(request)
        raise ProtocolError("unsupported", f"the student does not serve {type(request).__name__}")

    def apply_self_edits(self, request: ApplySelfEdits) -> CandidatesTrained:
        """Train one candidate adapter per job and put each in the artifact store."""
        candidates = []
        for job in request.jobs:
            settings = job.settings or self.config.train
            trained = train_adapter(self.model, self.tokenizer, job, settings, self.config.model)
            try:
                provenance = {
                    "self_edit_id": job.self_edit.self_edit_id,
                    "context_id": job.context.context_id,
                    "settings": settings.model_dump(),
                    "losses": trained.losses,
                }
                ref = self.store.put_adapter(trained.folder, self.config.model, provenance)
            finally:
                shutil.rmtree(trained.folder, ignore_errors=True)
            log.info(
                "candidate %s for %s: loss %.3f -> %.3f in %.1fs",
                ref.adapter_id[:12],
                job.self_edit.self_edit_id,
                trained.losses[0],
                trained.losses[-1],
                trained.seconds,
            )
            candidates.append(
                Candidate(
                    adapter=ref,
                    self_edit_id=job.self_edit.self_edit_id,
                    settings=settings,
                    num_sequences=trained.num_sequences,
                    steps=trained.steps,
                    losses=trained.losses,
                    seconds=trained.seconds,
                )
            )
        return CandidatesTrained(candidates=candidates)

    def answer_questions(self, request: AnswerQuestions) -> Answers:
        """Every question answered by every requested model; base answers are cached."""
        adapter_ids = [a for a in request.adapter_ids if a is not None]
        results = {}
        if None in request.adapter_ids:
            results[None] = self._answer_with_base(request.questions, request.max_new_tokens)
        if adapter_ids:
            folders = {a: self.store.path(a) for a in dict.fromkeys(adapter_ids)}
            with adapters_loaded(self.model, folders) as peft_model:
                for adapter_id in folders:
                    peft_model.set_adapter(adapter_id)
                    results[adapter_id] = self._generate(peft_model, request.questions, request.max_new_tokens)
        return Answers(results=[ModelAnswers(adapter_id=a, answers=results[a]) for a in request.adapter_ids])

    def _answer_with_base(self, questions: list[str], max_new_tokens: int) -> list[str]:
        missing = [q for q in dict.fromkeys(questions) if (q, max_new_tokens) not in self._base_answers]
        if missing:
            for question, answer in zip(missing, self._generate(self.model, missing, max_new_tokens), strict=True):
                self._base_answers[(question, max_new_tokens)] = answer
        return [self._base_answers[(q, max_new_tokens)] for q in questions]

    def _generate(self, model, questions: list[str], max_new_tokens: int) -> list[str]:
        return generate_answers(model, self.tokenizer, questions, max_new_tokens, self.config.answer_batch_size)
