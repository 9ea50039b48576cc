"""The auditor's request handler: scores candidates against the base model and decides.

Entry point: ``seal auditor --bind tcp://127.0.0.1:5556 --student tcp://127.0.0.1:5555``.

For each candidate the auditor asks the student for closed-book answers (base
model and candidate, τ and the retention set), grades them against the key it
alone holds, scores the gold answers' likelihood on its own copy of the base
model, and accepts only when the gain on the configured metric is large
enough and retention held. Every verdict goes into the ledger first.

When adapters are served, "the base model" is the served stack: the candidate
must have been trained on top of it, is judged against it, and must keep the
answers of the passages the stack learned earlier (:mod:`auditor.continual`).
"""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.config import AuditorConfig
from auditor.continual import earlier_contexts, rehearsal_problem, stack_problem
from auditor.decision import Decider, ModelResult, provenance_problem
from auditor.recorded import recorded_verdicts
from auditor.safety import load_probes, review_probes, review_text
from auditor.scoring import score_models
from auditor.teacher_versions import record_teacher_version
from library.datasets import DEMO_DOCUMENTS, QAItem, load_questions, load_retention
from library.ledger import Ledger
from library.merged_stack import merged_stack
from library.models import load_model
from protocol.artifacts import ArtifactError, ArtifactStore
from protocol.clients import StudentClient
from protocol.codec import AUDITOR_CHANNEL, ProtocolError
from protocol.dispatch import Dispatcher
from protocol.messages import (
    CandidateToJudge,
    JudgeCandidates,
    RecordTeacherVersion,
    Review,
    Reviews,
    ReviewSelfEdits,
    TeacherVersionRecorded,
    Verdict,
    Verdicts,
    Veto,
)

log = logging.getLogger(__name__)


class Auditor:
    """Holds τ and the retention set; turns candidates into verdicts."""

    def __init__(self, config: AuditorConfig, student: StudentClient, signing_key: Ed25519PrivateKey | None = None):
        self.config = config
        self.student = student
        self.questions = load_questions(config.data or DEMO_DOCUMENTS, limit=config.limit)
        self.retention = load_retention(config.retention)
        self.probes = load_probes(config.probes)
        self.model, self.tokenizer = load_model(config.model, config.device, config.dtype)
        self.store = ArtifactStore(config.store, writer=False)  # it reads the adapters it judges, nothing else
        self.ledger = Ledger(config.ledger)
        self.decider = Decider(config, self.ledger, self.retention, signing_key)
        # (context id, served stack) -> the result of the model judged against, computed once
        self._base: dict[tuple[str, tuple[str, ...]], ModelResult] = {}
        self.handle = Dispatcher(
            AUDITOR_CHANNEL,
            {
                JudgeCandidates: self.judge,
                ReviewSelfEdits: self.review,
                RecordTeacherVersion: self.record_teacher_version,
            },
        )
        """Serves one request of the auditor channel (the handler the ZeroMQ server and in-process links call)."""

    def record_teacher_version(self, request: RecordTeacherVersion) -> TeacherVersionRecorded:
        """Check the version's claimed rewards against this ledger's verdicts, then record it."""
        return record_teacher_version(self.ledger, request)

    def review(self, request: ReviewSelfEdits) -> Reviews:
        """The text rules, before training: vetoed self-edits are recorded and should not be trained."""
        reviews = []
        for edit in request.self_edits:
            vetoes = review_text(edit.text, self.config.deny_patterns)
            if vetoes:
                self.ledger.append(
                    "review", {"self_edit": edit.model_dump(mode="json"), "vetoes": [v.model_dump() for v in vetoes]}
                )
            reviews.append(Review(self_edit_id=edit.self_edit_id, vetoes=vetoes))
        return Reviews(reviews=reviews)

    def judge(self, request: JudgeCandidates) -> Verdicts:
        """A verdict per candidate, each recorded in the ledger before it is returned."""
        tau = self.questions.get(request.context_id)
        if tau is None:
            raise ProtocolError("validation", f"no questions held for context {request.context_id}", "context_id")
        # A request re-sent after a crash gets the verdicts already recorded, never a second one.
        verdicts: dict[int, Verdict] = recorded_verdicts(self.ledger, request.candidates)
        pending = [c for c in request.candidates if id(c) not in verdicts]
        stack = self.student.describe_served(self.config.student_timeout_s).stack if pending else []
        usable, refused = self._check_artifacts(request.context_id, pending, stack)
        adapter_ids = [c.candidate.adapter.adapter_id for c in usable]
        learned = earlier_contexts(self.ledger, stack, request.context_id)
        earlier = {c: self.questions[c] for c in learned if c in self.questions}  # τ this auditor holds
        results = self._evaluate(request.context_id, tau, adapter_ids, stack, earlier)
        vetoes = self._probe_vetoes(adapter_ids, stack)
        base = results.pop(None)
        for c in usable:
            adapter_id = c.candidate.adapter.adapter_id
            c_vetoes = review_text(c.self_edit.text, self.config.deny_patterns) + vetoes[adapter_id]
            verdicts[id(c)] = self.decider.decide(
                request.context_id, tau, c, base, results[adapter_id], c_vetoes, earlier
            )
        for c, why in refused:
            verdicts[id(c)] = self.decider.refuse(request.context_id, c, why)
        for v in verdicts.values():
            log.info("%s %s: %s", "ACCEPT" if v.accepted else "reject", v.adapter_id[:12], v.reason)
        return Verdicts(verdicts=[verdicts[id(c)] for c in request.candidates])

    def _probe_vetoes(self, adapter_ids: list[str], stack: list[str]) -> dict[str, list[Veto]]:
        """Protected behaviours, after training: each candidate's probe answers against the base's (or the stack's)."""
        if not self.probes or not adapter_ids:
            return {a: [] for a in adapter_ids}
        reply = self.student.answer_questions(
            [p.prompt for p in self.probes], [None, *dict.fromkeys(adapter_ids)], self.config.probe_tokens, stack=stack
        )
        answers = {r.adapter_id: r.answers for r in reply.results}
        return {
            a: review_probes(self.probes, answers[None], answers[a], self.config.probe_min_agreement)
            for a in adapter_ids
        }

    # ----------------------------------------------------------------- evaluation

    def _check_artifacts(
        self, context_id: str, candidates: list[CandidateToJudge], stack: list[str]
    ) -> tuple[list[CandidateToJudge], list[tuple[CandidateToJudge, str]]]:
        """Split candidates into the usable and the refused, with why.

        Usable: the adapter is intact, for our base model, and its provenance names the self-edit and passage judged,
        the served ``stack`` as what it was trained on top of, and only rehearsal data this auditor accepted.
        """
        usable, refused = [], []
        for item in candidates:
            ref = item.candidate.adapter
            if ref.base_model != self.config.model:
                refused.append((item, f"adapter is for base model {ref.base_model}, not {self.config.model}"))
                continue
            try:
                provenance = self.store.provenance(ref.adapter_id)
                problem = (
                    provenance_problem(item, provenance, context_id)
                    or stack_problem(provenance, stack)
                    or rehearsal_problem(self.ledger, provenance)
                )
            except ArtifactError as exc:
                problem = str(exc)
            if problem:
                refused.append((item, problem))
            else:
                usable.append(item)
        return usable, refused

    def _evaluate(
        self,
        context_id: str,
        tau: list[QAItem],
        adapter_ids: list[str],
        stack: list[str],
        earlier: dict[str, list[QAItem]],
    ) -> dict[str | None, ModelResult]:
        """Answers from the student, likelihoods from our own copy of the model (the base's once per context).

        With a served ``stack``, None is the stack and each candidate answers and is scored on top of it; the
        questions of the ``earlier`` passages are answered after τ and the retention set.
        """
        models: list[str | None] = [None, *dict.fromkeys(adapter_ids)]
        asked = [*tau, *self.retention, *(q for questions in earlier.values() for q in questions)]
        reply = self.student.answer_questions(
            [q.question for q in asked],
            models,
            self.config.answer_tokens,
            instruction=self.config.answer_instruction,
            stack=stack,
        )
        answers = {r.adapter_id: r.answers for r in reply.results}
        key = (context_id, tuple(stack))
        to_score = models if key not in self._base else models[1:]
        with merged_stack(self.model, [self.store.path(a) for a in stack]):
            results = self._score(to_score, tau, answers) if to_score else {}
        if None in results:
            self._base[key] = results[None]
        results[None] = self._base[key]
        return results

    def _score(
        self, models: list[str | None], tau: list[QAItem], answers: dict[str | None, list[str]]
    ) -> dict[str | None, ModelResult]:
        """Gold-answer likelihood on τ (best over the golds) and of the base's retention answers, per model.

        Every model is scored in one batched pass (:func:`auditor.scoring.score_models`, which the knowledge
        bench measures): each row is routed to its own adapter (None: the base).
        """
        retained = len(tau) + len(self.retention)  # answers past this are to earlier passages' questions
        base_retention = answers[None][len(tau) : retained]
        retention_pairs = [(q.question, a) for q, a in zip(self.retention, base_retention, strict=True)]
        folders = {m: self.store.path(m) for m in models if m is not None}
        scores = score_models(
            self.model, self.tokenizer, models, folders, tau, retention_pairs, self.config.answer_instruction
        )
        results = {}
        for model_id in models:
            given, scored = answers[model_id], scores[model_id]
            results[model_id] = ModelResult(
                given[: len(tau)], scored.gold, given[len(tau) : retained], scored.pairs, given[retained:]
            )
        return results
