"""The few-shot student's request handler: test-time training per self-edit, answers per adapter.

Entry point: ``seal fewshot student --bind tcp://127.0.0.1:5555``. It receives tasks without their
test outputs (:class:`~protocol.fewshot.ArcTask`), trains one adapter per :class:`TrainTask` into the
store, with the self-edit's sha256 and the task's content id as its provenance (what the auditor
checks before it judges), and answers :class:`AnswerTask` with an adapter from the store or in context.
"""

from __future__ import annotations

from library.arc import task_content_id
from library.models import load_model
from protocol.artifacts import TRAINED_FROM, TRAINED_ON_CONTEXT, ArtifactError, ArtifactStore, self_edit_sha256
from protocol.codec import FEWSHOT_STUDENT_CHANNEL, ProtocolError
from protocol.dispatch import Dispatcher
from protocol.fewshot_messages import AnswerTask, TaskAnswers, TaskTrained, TrainTask, TTTCandidate, recipe_of
from student.fewshot import FewShotStudent
from student.fewshot_config import FewShotStudentServiceConfig


class FewShotStudentService:
    """Serves the few-shot student channel with one base model and the artifact store."""

    def __init__(self, config: FewShotStudentServiceConfig) -> None:
        """Load the base model and open the store."""
        self.config = config
        model, tokenizer = load_model(config.model, config.device, config.dtype)
        self.store = ArtifactStore(config.store)
        self.solver = FewShotStudent(model, tokenizer, config.model, self.store, config.ttt)
        self.handle = Dispatcher(FEWSHOT_STUDENT_CHANNEL, {TrainTask: self.train, AnswerTask: self.answer})
        """Serves one request of the channel (the handler the ZeroMQ server and in-process links call)."""

    def train(self, request: TrainTask) -> TaskTrained:
        """One test-time adapter for the request's task and self-edit, bound to both in its provenance."""
        edit = request.self_edit
        provenance = {
            TRAINED_FROM: [self_edit_sha256(edit)],
            TRAINED_ON_CONTEXT: task_content_id(request.task),
            "self_edit_id": edit.self_edit_id,
            "context_id": request.task.task_id,
        }
        done = self.solver.train(request.task, recipe_of(edit), provenance)
        candidate = TTTCandidate(
            task_id=request.task.task_id,
            self_edit_id=edit.self_edit_id,
            adapter=done.adapter,
            num_examples=done.num_examples,
            losses=done.losses,
            seconds=done.seconds,
            skipped=done.skipped,
        )
        return TaskTrained(candidate=candidate)

    def answer(self, request: AnswerTask) -> TaskAnswers:
        """The task's test inputs answered with the adapter (or in context); an unknown adapter is refused."""
        try:
            return TaskAnswers(prediction=self.solver.answer(request.task, request.adapter_id))
        except ArtifactError:  # the caller learns which adapter, not where the store lives
            reason = f"adapter {str(request.adapter_id)[:12]} is not in the student's store, or does not match its hash"
            raise ProtocolError("refused", reason, "adapter_id") from None
