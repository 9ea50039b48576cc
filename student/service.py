"""The student's request handler: one base model, many candidate adapters.

Entry point: ``seal student --bind tcp://127.0.0.1:5555``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from library.combined_lora import combine_stack, combined_rank
from library.datasets import context_id_for
from library.merged_stack import merged_stack
from library.models import load_model
from library.scratch import scratch_folder
from library.vllm_engine import require_vllm
from protocol.artifacts import (
    REHEARSED,
    TRAINED_FROM,
    TRAINED_ON_CONTEXT,
    TRAINED_ON_STACK,
    ArtifactError,
    ArtifactStore,
    self_edit_sha256,
)
from protocol.codec import STUDENT_CHANNEL, ProtocolError
from protocol.dispatch import Dispatcher
from protocol.messages import (
    AnswerQuestions,
    Answers,
    AnswerServed,
    ApplySelfEdits,
    Candidate,
    CandidatesTrained,
    DescribeServed,
    DescribeStudent,
    ModelAnswers,
    Promote,
    Rollback,
    StudentInfo,
    TrainConfig,
    TrainJob,
)
from student.anchors import ANCHOR_TOKENS, anchor_questions, anchor_texts
from student.answering import answer_with_adapters, generate_answers
from student.config import StudentConfig
from student.serving import ServedModel
from student.training import TrainedAdapter
from student.vllm_answering import VLLMAnswerer  # imports vllm only when one is built
from student.workers import Jobs, StudentWorkers, train_in_shards  # imports ray only when workers start

log = logging.getLogger(__name__)


class Student:
    """Applies self-edits as LoRA candidates and answers questions with the base model or a candidate."""

    def __init__(
        self, config: StudentConfig, verify_key: Ed25519PublicKey | None = None, vllm_engine: Any = None
    ) -> None:
        """Load the base model (and, with ``answer_backend="vllm"``, a vLLM engine, or use ``vllm_engine``)."""
        if config.answer_backend == "vllm":
            require_vllm("--answer-backend vllm")  # one line, before any model is loaded
        self.config = config
        self.model, self.tokenizer = load_model(config.model, config.device, config.dtype)
        self.store = ArtifactStore(config.store)
        self.served = ServedModel(self.model, self.tokenizer, self.store, verify_key, config.answer_batch_size)
        self.vllm: VLLMAnswerer | None = None
        if config.answer_backend == "vllm":
            self.vllm = VLLMAnswerer(config.model, config.vllm, engine=vllm_engine)
        self.workers = StudentWorkers(config) if config.workers > 1 else None
        # (question, max_new_tokens, instruction, stack) -> the answer of the base model, or of that stack
        self._base_answers: dict[tuple[str, int, str | None, tuple[str, ...]], str] = {}
        self.handle = Dispatcher(
            STUDENT_CHANNEL,
            {
                ApplySelfEdits: self.apply_self_edits,
                AnswerQuestions: self.answer_questions,
                DescribeStudent: self.describe,
                Promote: self.served.promote,
                Rollback: self.served.rollback,
                DescribeServed: self.served.describe,
                AnswerServed: self.served.answer,
            },
        )
        """Serves one request of the student channel (the handler the ZeroMQ server and in-process links call)."""

    def describe(self, request: DescribeStudent) -> StudentInfo:
        """The base model, the device and the default LoRA settings."""
        device = str(self.model.device)
        return StudentInfo(base_model=self.config.model, device=device, default_settings=self.config.train)

    def apply_self_edits(self, request: ApplySelfEdits) -> CandidatesTrained:
        """Train one candidate adapter per job, into the store; the jobs on one stack all together.

        Jobs on top of the same adapters (``on_top_of``: the served stack) share one base-model pass per
        step, with that stack merged into the base (:func:`library.merged_stack.merged_stack`).
        """
        jobs = [self._with_anchors(job, job.settings or self.config.train) for job in request.jobs]
        by_stack: dict[tuple[str, ...], list[int]] = {}
        for i, (job, _) in enumerate(jobs):
            by_stack.setdefault(tuple(job.on_top_of), []).append(i)
        trained: dict[int, TrainedAdapter] = {}
        for stack, indices in by_stack.items():
            trained |= dict(zip(indices, self._train_on_stack(stack, [jobs[i] for i in indices]), strict=True))
        candidates = []
        for (job, settings), result in zip(jobs, [trained[i] for i in range(len(jobs))], strict=True):
            try:
                provenance = {
                    TRAINED_FROM: [self_edit_sha256(job.self_edit)],  # binds the adapter to its text for the auditor
                    TRAINED_ON_CONTEXT: context_id_for(job.context.title, job.context.text),  # and to its passage
                    TRAINED_ON_STACK: list(job.on_top_of),  # and to the model it was trained on top of
                    REHEARSED: [self_edit_sha256(e) for e in job.rehearsal],
                    "self_edit_id": job.self_edit.self_edit_id,
                    "context_id": job.context.context_id,
                    "settings": settings.model_dump(),
                    "losses": result.losses,
                }
                ref = self.store.put_adapter(result.folder, self.config.model, provenance)
            finally:
                shutil.rmtree(result.folder, ignore_errors=True)
            first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"),) * 2
            log.info(
                "candidate %s for %s: loss %.3f -> %.3f in %.1fs (its share; %d trained together)",
                ref.adapter_id[:12],
                job.self_edit.self_edit_id,
                first,
                last,
                result.seconds,
                len(jobs),
            )
            candidates.append(
                Candidate(
                    adapter=ref,
                    self_edit_id=job.self_edit.self_edit_id,
                    settings=settings,
                    num_sequences=result.num_sequences,
                    steps=result.steps,
                    losses=result.losses,
                    seconds=result.seconds,
                )
            )
        return CandidatesTrained(candidates=candidates)

    def _with_anchors(self, job: TrainJob, settings: TrainConfig) -> tuple[TrainJob, TrainConfig]:
        """The job with its anchors filled in: the base model's own answers to ``settings.anchors`` questions."""
        try:
            questions = anchor_questions(settings.anchors)
        except ValueError as exc:
            raise ProtocolError("validation", str(exc), "jobs.settings.anchors") from None
        texts: list[str] = []
        if questions:
            request = AnswerQuestions(questions=questions, adapter_ids=[None], max_new_tokens=ANCHOR_TOKENS)
            texts = anchor_texts(self.tokenizer, questions, self._answer_with_base(request))  # cached after once
        return job.model_copy(update={"anchor_texts": texts}), settings

    def answer_questions(self, request: AnswerQuestions) -> Answers:
        """Every question answered by every requested model; base answers are cached.

        All requested adapters answer together, so K candidates share each forward pass: on
        transformers one mixed-adapter batch routes each row to its own adapter; on vLLM each
        candidate is a LoRA of one ``generate`` call. The base model answers in a call of its own. With a
        ``stack``, None answers with the stack and an adapter on top of it: on transformers the stack is merged
        into the base model first; on vLLM, which takes one LoRA per request, each is one LoRA of summed rank.
        """
        if request.stack and self.vllm is not None:
            return self._answer_on_stack_with_vllm(request, self.vllm)
        stack = [self._adapter_folder(a, "stack") for a in request.stack]
        results: dict[str | None, list[str]] = {}
        with merged_stack(self.model, stack):
            if None in request.adapter_ids:
                results[None] = self._answer_with_base(request)
            adapter_ids = list(dict.fromkeys(a for a in request.adapter_ids if a is not None))
            if adapter_ids:
                answers = self._answer_with_adapters(adapter_ids, request)
                results |= dict(zip(adapter_ids, answers, strict=True))
        return Answers(results=[ModelAnswers(adapter_id=a, answers=results[a]) for a in request.adapter_ids])

    def _answer_on_stack_with_vllm(self, request: AnswerQuestions, vllm: VLLMAnswerer) -> Answers:
        """The stack (None) and each adapter on top of it, each combined into one LoRA (:func:`combine_stack`)."""
        stack = [self._adapter_folder(a, "stack") for a in request.stack]
        models = list(dict.fromkeys(request.adapter_ids))
        layers = [stack if m is None else [*stack, self._adapter_folder(m)] for m in models]
        rank = max(combined_rank(folders) for folders in layers)
        if rank > vllm.settings.max_lora_rank:
            why = (
                f"the stack with its candidate has LoRA rank {rank}; start the student with --vllm.max-lora-rank {rank}"
            )
            raise ProtocolError("unsupported", why, "stack")
        with tempfile.TemporaryDirectory(dir=scratch_folder()) as work:
            combined = [combine_stack(folders, Path(work) / str(i)) for i, folders in enumerate(layers)]
            answers = vllm.answer(request.questions, combined, request.max_new_tokens, request.instruction)
        results = dict(zip(models, answers, strict=True))
        return Answers(results=[ModelAnswers(adapter_id=a, answers=results[a]) for a in request.adapter_ids])

    def _answer_with_base(self, request: AnswerQuestions) -> list[str]:
        key = (request.max_new_tokens, request.instruction, tuple(request.stack))
        missing = [q for q in dict.fromkeys(request.questions) if (q, *key) not in self._base_answers]
        if missing:
            for question, answer in zip(missing, self._generate_base(missing, request), strict=True):
                self._base_answers[(question, *key)] = answer
        return [self._base_answers[(q, *key)] for q in request.questions]

    def _generate_base(self, questions: list[str], request: AnswerQuestions) -> list[str]:
        if self.vllm is not None:
            return self.vllm.answer(questions, [None], request.max_new_tokens, request.instruction)[0]
        return generate_answers(
            self.model,
            self.tokenizer,
            questions,
            request.max_new_tokens,
            self.config.answer_batch_size,
            instruction=request.instruction,
        )

    def _adapter_folder(self, adapter_id: str, field: str = "adapter_ids") -> Path:
        try:
            return self.store.path(adapter_id)
        except ArtifactError as exc:  # the caller learns which adapter, not where the store lives
            log.warning("refused to answer: %s", exc)
            reason = f"adapter {adapter_id[:12]} is not in the student's store, or does not match its hash"
            raise ProtocolError("refused", reason, field) from None

    def _answer_with_adapters(self, adapter_ids: list[str], request: AnswerQuestions) -> list[list[str]]:
        """One list of answers per adapter, in order; an adapter missing from the store is a typed refusal."""
        folders = {a: self._adapter_folder(a) for a in adapter_ids}
        questions, max_new_tokens = request.questions, request.max_new_tokens
        if self.vllm is not None:
            return self.vllm.answer(questions, list(folders.values()), max_new_tokens, request.instruction)
        if self.workers is not None and not request.stack:  # the workers hold the base model, not the stack
            return self.workers.answer(folders, questions, max_new_tokens, request.instruction)
        return answer_with_adapters(
            self.model,
            self.tokenizer,
            folders,
            questions,
            max_new_tokens,
            self.config.answer_batch_size,
            instruction=request.instruction,
        )

    def _train_on_stack(self, stack: tuple[str, ...], jobs: Jobs) -> list[TrainedAdapter]:
        """The jobs' adapters trained on top of ``stack``: on the Ray workers when there are some and no stack
        (they hold the base model only), else here with the stack merged into the base, shard by shard."""
        if self.workers is not None and not stack:  # the K candidates spread over the workers, one shard each
            return self.workers.train(jobs)
        with merged_stack(self.model, [self._adapter_folder(a, "jobs.on_top_of") for a in stack]):
            shards = self.config.train_shards or self.config.workers  # as the workers would cut them: the same ids
            return train_in_shards(self.model, self.tokenizer, jobs, self.config.model, shards)

    def close(self) -> None:
        """Stop the Ray workers, if any (and the local Ray runtime they started)."""
        if self.workers is not None:
            self.workers.close()
