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
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.config import AuditorConfig
from auditor.continual import earlier_contexts, rehearsal_problem, stack_problem
from auditor.decision import Decider, ModelResult, provenance_problem
from auditor.document_tau import auditor_tau
from auditor.judge_metric import JudgeMetric, JudgeOutcome
from auditor.recorded import recorded_verdicts
from auditor.reviewer import Reviewer
from auditor.safety import load_probes, lost_facts, review_probes, review_text
from auditor.scoring import score_models
from auditor.teacher_versions import record_teacher_version
from auditor.workers import AuditorWorkers  # imports ray only when workers start
from library.datasets import QAItem, load_retention
from library.ledger import Ledger
from library.llm_judge import Judgement
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
        self.model, self.tokenizer = load_model(config.model, config.device, config.dtype)
        # τ from its own documents (reward and sealed acceptance sets, maybe written by its model) or from --data
        self.tau = auditor_tau(config, self.model, self.tokenizer)
        self.questions = self.tau.questions
        self.retention = load_retention(config.retention)
        self.probes = load_probes(config.probes)
        self.store = ArtifactStore(config.store, writer=False)  # it reads the adapters it judges, nothing else
        self.ledger = Ledger(config.ledger)
        self.workers = AuditorWorkers(config) if config.workers > 1 else None
        self.tau.record(self.ledger)
        self.decider = Decider(config, self.ledger, self.retention, signing_key)
        # (context id, served stack) -> the result of the model judged against, computed once
        self._base: dict[tuple[str, tuple[str, ...]], ModelResult] = {}
        # The judge's key is read here, in the auditor process, and nowhere else.
        self.judge_metric = JudgeMetric(config.judge) if config.metric == "judge" and config.judge else None
        # (context id, served stack) -> the judgements of the model judged against, once they all succeeded
        self._base_judged: dict[tuple[str, tuple[str, ...]], list[Judgement]] = {}
        self.reviewer = Reviewer(config.reviewer) if config.reviewer else None
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
        """The text rules and the reviewer model, before training: vetoed self-edits are recorded and should not be
        trained; every review by the reviewer model is recorded."""
        reviews = []
        outcomes = self.reviewer.review_self_edits([e.text for e in request.self_edits]) if self.reviewer else []
        for i, edit in enumerate(request.self_edits):
            vetoes = review_text(edit.text, self.config.deny_patterns)
            record = {"self_edit": edit.model_dump(mode="json")}
            if outcomes:
                vetoes += outcomes[i].vetoes
                record["reviewer"] = outcomes[i].record
            if vetoes or outcomes:
                self.ledger.append("review", {**record, "vetoes": [v.model_dump() for v in vetoes]})
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
        if usable:  # a re-sent request whose verdicts are all recorded needs no student
            verdicts |= self._evaluate_and_decide(request.context_id, tau, usable, stack)
        for c, why in refused:
            verdicts[id(c)] = self.decider.refuse(request.context_id, c, why)
        for v in verdicts.values():
            log.info("%s %s: %s", "ACCEPT" if v.accepted else "reject", v.adapter_id[:12], v.reason)
        return Verdicts(verdicts=[verdicts[id(c)] for c in request.candidates])

    def _evaluate_and_decide(
        self, context_id: str, tau: list[QAItem], usable: list[CandidateToJudge], stack: list[str]
    ) -> dict[int, Verdict]:
        """Verdicts on candidates whose artifacts passed the checks, each judged against the served ``stack``."""
        adapter_ids = [c.candidate.adapter.adapter_id for c in usable]
        learned = earlier_contexts(self.ledger, stack, context_id)
        earlier = {c: self._acceptance_set(c) for c in learned if c in self.questions}  # τ this auditor holds
        results = self._evaluate(context_id, tau, adapter_ids, stack, earlier)
        judged = self._judge_outcomes((context_id, tuple(stack)), tau, results, adapter_ids)
        probe_answers = self._probe_answers(adapter_ids, stack)
        unadapted = self._unadapted_probe_answers(probe_answers, stack)
        base = results.pop(None)
        reward_count = self.tau.reward_counts.get(context_id)
        verdicts = {}
        for c in usable:
            adapter_id = c.candidate.adapter.adapter_id
            r_vetoes, extra = self._reviewer_check(c, probe_answers)
            c_vetoes = review_text(c.self_edit.text, self.config.deny_patterns)
            c_vetoes += self._probe_vetoes(probe_answers, unadapted, adapter_id) + r_vetoes
            if unadapted:  # the facts lost against the base model, also when within the allowance
                lost = lost_facts(self.probes, unadapted, probe_answers[adapter_id])
                extra["probes"] = {
                    "facts_lost": [p.prompt for p in lost],
                    "allowed": self.config.probe_answers_may_lose,
                }
            verdicts[id(c)] = self.decider.decide(
                context_id,
                tau,
                c,
                base,
                results[adapter_id],
                c_vetoes,
                judged.get(adapter_id),
                extra,
                reward_count,
                earlier,
                stack,
            )
        return verdicts

    def _acceptance_set(self, context_id: str) -> list[QAItem]:
        """The questions a verdict on this passage is accepted on: its sealed acceptance set, when τ is split."""
        return self.questions[context_id][self.tau.reward_counts.get(context_id, 0) :]

    def _probe_answers(self, adapter_ids: list[str], stack: list[str]) -> dict[str | None, list[str]]:
        """The protected probes' answers, after training, of the model judged against (None: the base, or the
        served stack) and each candidate on top of it; {} without probes."""
        if not self.probes or not adapter_ids:
            return {}
        reply = self.student.answer_questions(
            [p.prompt for p in self.probes], [None, *dict.fromkeys(adapter_ids)], self.config.probe_tokens, stack=stack
        )
        return {r.adapter_id: r.answers for r in reply.results}

    def _unadapted_probe_answers(self, answers: dict[str | None, list[str]], stack: list[str]) -> list[str]:
        """The probes' answers of the base model without any adapter (the student caches them); [] without probes."""
        if not answers:
            return []
        if not stack:
            return answers[None]
        reply = self.student.answer_questions([p.prompt for p in self.probes], [None], self.config.probe_tokens)
        return reply.results[0].answers

    def _probe_vetoes(self, answers: dict[str | None, list[str]], unadapted: list[str], adapter_id: str) -> list[Veto]:
        """Protected behaviours: the candidate's probe answers against the base's (facts: the unadapted base's)."""
        if not answers:
            return []
        config = self.config
        return review_probes(
            self.probes,
            answers[None],
            answers[adapter_id],
            config.probe_min_agreement,
            config.probe_answers_may_lose,
            unadapted,
        )

    def _reviewer_check(
        self, item: CandidateToJudge, probe_answers: dict[str | None, list[str]]
    ) -> tuple[list[Veto], dict[str, Any]]:
        """The reviewer model's vetoes on a trained candidate (its self-edit, its probe answers) and their record."""
        if self.reviewer is None:
            return [], {}
        adapter_id = item.candidate.adapter.adapter_id
        prompts = [p.prompt for p in self.probes] if probe_answers else []
        base, cand = probe_answers.get(None, []), probe_answers.get(adapter_id, [])
        outcome = self.reviewer.review_candidate(item.self_edit.text, prompts, base, cand)
        return outcome.vetoes, {"reviewer": outcome.record}

    def _judge_outcomes(
        self,
        key: tuple[str, tuple[str, ...]],
        tau: list[QAItem],
        results: dict[str | None, ModelResult],
        adapter_ids: list[str],
    ) -> dict[str, JudgeOutcome]:
        """With ``--metric judge``: the judge's grades of base and each candidate (the base's, per context and
        served stack, kept once they all succeed)."""
        if self.judge_metric is None or not adapter_ids:
            return {}
        base = self._base_judged.get(key) or self.judge_metric.grade(tau, results[None].answers)
        if all(j.correct is not None for j in base):
            self._base_judged[key] = base
        return {
            a: self.judge_metric.compare(tau, base, self.judge_metric.grade(tau, results[a].answers))
            for a in dict.fromkeys(adapter_ids)
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
            results = self._score(to_score, tau, answers, stack) if to_score else {}
        if None in results:
            self._base[key] = results[None]
        results[None] = self._base[key]
        return results

    def _score(
        self, models: list[str | None], tau: list[QAItem], answers: dict[str | None, list[str]], stack: list[str]
    ) -> dict[str | None, ModelResult]:
        """Gold-answer likelihood on τ (best over the golds) and of the base's retention answers, per model.

        Every model is scored in one batched pass (:func:`auditor.scoring.score_models`, which the knowledge
        bench measures): each row is routed to its own adapter (None: the base).
        """
        retained = len(tau) + len(self.retention)  # answers past this are to earlier passages' questions
        base_retention = answers[None][len(tau) : retained]
        retention_pairs = [(q.question, a) for q, a in zip(self.retention, base_retention, strict=True)]
        folders = {m: self.store.path(m) for m in models if m is not None}
        if self.workers is not None and not stack:  # the models spread over the Ray workers (they hold the base only)
            scores = self.workers.score(models, folders, tau, retention_pairs, self.config.answer_instruction)
        else:
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

    def close(self) -> None:
        """Stop the Ray workers, if any (and the local Ray runtime they started), and release the ledger."""
        if self.workers is not None:
            self.workers.close()
        self.ledger.close()
