"""The auditor's request handler: scores candidates against the base model and decides.

Entry point: ``seal auditor --bind tcp://127.0.0.1:5556 --student tcp://127.0.0.1:5555``.

For each candidate the auditor asks the student for closed-book answers (base
model and candidate, τ and the retention set), grades them against the key it
alone holds, scores the gold answers' likelihood on its own copy of the base
model, and accepts only when the gain on the configured metric is large
enough and retention held. Every verdict goes into the ledger first.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

from auditor.config import AuditorConfig
from auditor.grading import exact_match, f1_score
from auditor.ledger import Ledger
from auditor.scoring import answer_logliks
from protocol.artifacts import ArtifactError, ArtifactStore
from protocol.codec import ProtocolError
from protocol.messages import (
    AnswerQuestions,
    Answers,
    Body,
    CandidateForReview,
    JudgeCandidates,
    Scores,
    Verdict,
    Verdicts,
)
from seal.datasets import DEMO_DOCUMENTS, QAItem, load_questions, load_retention
from seal.lora import adapters_loaded
from seal.models import load_model

log = logging.getLogger(__name__)


class StudentLink(Protocol):
    """What the auditor needs from the student: a request/reply call (a transport Client)."""

    def call(self, body: Body, timeout_s: float | None = None) -> Body: ...


@dataclass
class ModelResult:
    """One model's answers and likelihoods on τ and the retention set."""

    answers: list[str]
    gold_logliks: list[float]
    retention_answers: list[str]
    retention_logliks: list[float]


class Auditor:
    """Holds τ and the retention set; turns candidates into verdicts."""

    def __init__(self, config: AuditorConfig, student: StudentLink):
        self.config = config
        self.student = student
        self.questions = load_questions(config.data or DEMO_DOCUMENTS, limit=config.limit)
        self.retention = load_retention(config.retention)
        self.model, self.tokenizer = load_model(config.model, config.device)
        self.store = ArtifactStore(config.store)
        self.ledger = Ledger(config.ledger)
        self._base: dict[str, ModelResult] = {}  # context id -> the base model's result, computed once

    def handle(self, request: Body) -> Body:
        if isinstance(request, JudgeCandidates):
            return self.judge(request)
        raise ProtocolError("unsupported", f"the auditor does not serve {type(request).__name__}")

    def judge(self, request: JudgeCandidates) -> Verdicts:
        """A verdict per candidate, each recorded in the ledger before it is returned."""
        tau = self.questions.get(request.context_id)
        if tau is None:
            raise ProtocolError("validation", f"no questions held for context {request.context_id}", "context_id")
        usable, refused = self._check_artifacts(request.candidates)
        results = self._evaluate(request.context_id, tau, [c.candidate.adapter.adapter_id for c in usable])
        base = results.pop(None)
        verdicts = {
            id(c): self._decide(request.context_id, tau, c, base, results[c.candidate.adapter.adapter_id])
            for c in usable
        }
        verdicts |= {id(c): self._refuse(request.context_id, c, why) for c, why in refused}
        return Verdicts(verdicts=[verdicts[id(c)] for c in request.candidates])

    # ----------------------------------------------------------------- evaluation

    def _check_artifacts(
        self, candidates: list[CandidateForReview]
    ) -> tuple[list[CandidateForReview], list[tuple[CandidateForReview, str]]]:
        """Split candidates into those whose adapter is intact and for our base model, and the rest."""
        usable, refused = [], []
        for item in candidates:
            ref = item.candidate.adapter
            if ref.base_model != self.config.model:
                refused.append((item, f"adapter is for base model {ref.base_model}, not {self.config.model}"))
                continue
            try:
                self.store.path(ref.adapter_id)
                usable.append(item)
            except ArtifactError as exc:
                refused.append((item, str(exc)))
        return usable, refused

    def _evaluate(self, context_id: str, tau: list[QAItem], adapter_ids: list[str]) -> dict[str | None, ModelResult]:
        """Answers from the student, likelihoods from our own copy of the model."""
        models: list[str | None] = [None, *dict.fromkeys(adapter_ids)]
        questions = [q.question for q in tau] + [q.question for q in self.retention]
        reply = self.student.call(
            AnswerQuestions(questions=questions, adapter_ids=models, max_new_tokens=self.config.answer_tokens)
        )
        assert isinstance(reply, Answers)
        answers = {r.adapter_id: r.answers for r in reply.results}
        base_retention = answers[None][len(tau) :]
        if context_id not in self._base:
            self._base[context_id] = self._score(None, tau, answers[None], base_retention)
        results: dict[str | None, ModelResult] = {None: self._base[context_id]}
        if adapter_ids:
            folders = {a: self.store.path(a) for a in models if a is not None}
            with adapters_loaded(self.model, folders) as peft_model:
                for adapter_id in folders:
                    peft_model.set_adapter(adapter_id)
                    results[adapter_id] = self._score(peft_model, tau, answers[adapter_id], base_retention)
        return results

    def _score(self, model: Any, tau: list[QAItem], answers: list[str], base_retention: list[str]) -> ModelResult:
        """Gold-answer likelihood on τ (best over the golds) and the base's retention answers' likelihood."""
        model = model if model is not None else self.model
        golds = [(q.question, a) for q in tau for a in q.answers]
        flat = iter(answer_logliks(model, self.tokenizer, golds))
        gold_logliks = [max(next(flat) for _ in q.answers) for q in tau]
        retention_pairs = [(q.question, a) for q, a in zip(self.retention, base_retention, strict=True)]
        retention = answer_logliks(model, self.tokenizer, retention_pairs) if retention_pairs else []
        return ModelResult(answers[: len(tau)], gold_logliks, answers[len(tau) :], retention)

    # ----------------------------------------------------------------- decision

    def _decide(
        self, context_id: str, tau: list[QAItem], item: CandidateForReview, base: ModelResult, cand: ModelResult
    ) -> Verdict:
        base_scores, cand_scores = _scores(tau, base), _scores(tau, cand)
        gain = getattr(cand_scores, self.config.metric) - getattr(base_scores, self.config.metric)
        drop = _mean(base.retention_logliks) - _mean(cand.retention_logliks)
        if not (math.isfinite(gain) and math.isfinite(drop)):
            return self._refuse(context_id, item, "its scores are not finite (did training diverge?)")
        accepted, reason = self._rule(gain, drop)
        record = {
            "context_id": context_id,
            "accepted": accepted,
            "reason": reason,
            "reward": gain,
            "metric": self.config.metric,
            "retention_drop": drop,
            "thresholds": {"min_gain": self.config.min_gain, "max_retention_drop": self.config.max_retention_drop},
            "student_model": self.config.model,
            "adapter_id": item.candidate.adapter.adapter_id,
            "self_edit": item.self_edit.model_dump(),
            "training": item.candidate.model_dump(exclude={"adapter"}),
            "base": base_scores.model_dump(),
            "candidate": cand_scores.model_dump(),
            "per_question": _per_question(tau, base, cand),
            "retention": _retention_detail(self.retention, base, cand),
        }
        entry = self.ledger.append("verdict", record)
        log.info("%s %s: %s", "ACCEPT" if accepted else "reject", item.candidate.adapter.adapter_id[:12], reason)
        return Verdict(
            context_id=context_id,
            self_edit_id=item.self_edit.self_edit_id,
            adapter_id=item.candidate.adapter.adapter_id,
            accepted=accepted,
            metric=self.config.metric,
            reward=gain,
            base=base_scores,
            candidate=cand_scores,
            retention_drop=drop,
            reason=reason,
            ledger_entry=entry,
        )

    def _rule(self, gain: float, drop: float) -> tuple[bool, str]:
        metric, cfg = self.config.metric, self.config
        if drop > cfg.max_retention_drop:
            return False, f"retention dropped by {drop:.3f} > {cfg.max_retention_drop} nats/token"
        if gain < cfg.min_gain:
            return False, f"{metric} gain {gain:+.3f} is below the minimum {cfg.min_gain}"
        return True, f"{metric} gain {gain:+.3f} >= {cfg.min_gain}, retention drop {drop:.3f}"

    def _refuse(self, context_id: str, item: CandidateForReview, why: str) -> Verdict:
        """A candidate that could not be evaluated: recorded and rejected with zero reward."""
        empty = Scores(exact_match=0.0, f1=0.0, loglik=0.0, n_questions=0)
        reason = f"not evaluated: {why}"
        entry = self.ledger.append(
            "verdict",
            {
                "context_id": context_id,
                "accepted": False,
                "reason": reason,
                "reward": 0.0,
                "adapter_id": item.candidate.adapter.adapter_id,
                "self_edit": item.self_edit.model_dump(),
            },
        )
        return Verdict(
            context_id=context_id,
            self_edit_id=item.self_edit.self_edit_id,
            adapter_id=item.candidate.adapter.adapter_id,
            accepted=False,
            metric=self.config.metric,
            reward=0.0,
            base=empty,
            candidate=empty,
            retention_drop=0.0,
            reason=reason,
            ledger_entry=entry,
        )


def _scores(tau: list[QAItem], result: ModelResult) -> Scores:
    return Scores(
        exact_match=_mean([exact_match(a, q.answers) for q, a in zip(tau, result.answers, strict=True)]),
        f1=_mean([f1_score(a, q.answers) for q, a in zip(tau, result.answers, strict=True)]),
        loglik=_mean(result.gold_logliks),
        n_questions=len(tau),
    )


def _per_question(tau: list[QAItem], base: ModelResult, cand: ModelResult) -> list[dict[str, Any]]:
    return [
        {
            "question": q.question,
            "gold": q.answers,
            "base_answer": ba,
            "candidate_answer": ca,
            "base_loglik": bl,
            "candidate_loglik": cl,
            "candidate_f1": f1_score(ca, q.answers),
        }
        for q, ba, ca, bl, cl in zip(tau, base.answers, cand.answers, base.gold_logliks, cand.gold_logliks, strict=True)
    ]


def _retention_detail(retention: list[QAItem], base: ModelResult, cand: ModelResult) -> list[dict[str, Any]]:
    return [
        {"question": q.question, "base_answer": ba, "candidate_answer": ca, "base_loglik": bl, "candidate_loglik": cl}
        for q, ba, ca, bl, cl in zip(
            retention,
            base.retention_answers,
            cand.retention_answers,
            base.retention_logliks,
            cand.retention_logliks,
            strict=True,
        )
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
