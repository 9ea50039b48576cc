"""From evidence to a signed, recorded verdict: the auditor's decision rule and its provenance.

A verdict is built, signed (when the auditor holds a signing key), written to
the ledger with everything it was based on, and only then returned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditor.config import AuditorConfig
from auditor.continual import EarlierPassage, earlier_failure, earlier_passages
from auditor.grading import answer_recall, exact_match, f1_score
from auditor.judge_metric import JudgeOutcome
from library.datasets import QAItem
from library.ledger import Ledger
from protocol.artifacts import TRAINED_FROM, TRAINED_ON_CONTEXT, self_edit_sha256
from protocol.messages import CandidateToJudge, Scores, Verdict, Veto
from protocol.signing import sign_verdict

EMPTY_SCORES = Scores(exact_match=0.0, f1=0.0, loglik=0.0, answer_recall=0.0, n_questions=0)


@dataclass
class ModelResult:
    """One model's answers and likelihoods on τ and the retention set."""

    answers: list[str]
    gold_logliks: list[float]
    retention_answers: list[str]
    retention_logliks: list[float]
    earlier_answers: list[str] = field(default_factory=list)  # to earlier passages' questions (continual)

    def questions(self, start: int, stop: int | None = None) -> ModelResult:
        """The same result on τ's questions ``start:stop`` only (e.g. the reward or the acceptance set)."""
        return ModelResult(
            self.answers[start:stop],
            self.gold_logliks[start:stop],
            self.retention_answers,
            self.retention_logliks,
            self.earlier_answers,
        )


def provenance_problem(item: CandidateToJudge, provenance: dict[str, Any], context_id: str) -> str | None:
    """Why the store's provenance does not bind the candidate's adapter to what it is judged with, or None.

    The auditor reviews the self-edit text the request carries and holds τ for ``context_id``; unless the student
    recorded that very self-edit, and a passage with that content id, as the adapter's training data, an adapter
    trained on a vetoed text (in the self-edit or in the passage) could pass under a benign one.
    """
    adapter = item.candidate.adapter.adapter_id[:12]
    if self_edit_sha256(item.self_edit) not in provenance.get(TRAINED_FROM, []):
        return (
            f"adapter {adapter} was not trained on the self-edit it is judged with "
            f"({item.self_edit.self_edit_id}): the store's provenance records other training data"
        )
    if provenance.get(TRAINED_ON_CONTEXT) != context_id:
        return (
            f"adapter {adapter} was not trained on the passage of context {context_id}: "
            "the store's provenance records another passage"
        )
    return None


class Decider:
    """Applies the acceptance rule and records every verdict."""

    def __init__(
        self, config: AuditorConfig, ledger: Ledger, retention: list[QAItem], signing_key: Ed25519PrivateKey | None
    ):
        self.config = config
        self.ledger = ledger
        self.retention = retention
        self.signing_key = signing_key

    def decide(
        self,
        context_id: str,
        tau: list[QAItem],
        item: CandidateToJudge,
        base: ModelResult,
        cand: ModelResult,
        vetoes: list[Veto],
        judged: JudgeOutcome | None = None,
        extra: dict[str, Any] | None = None,
        reward_count: int | None = None,
        earlier: dict[str, list[QAItem]] | None = None,
        on_top_of: list[str] | None = None,
    ) -> Verdict:
        """Accept only on enough gain, retention held, earlier passages kept, and no veto.

        ``base`` is the model the candidate is judged against (the base, or the served stack).
        ``judged``: the LLM judge's outcome (``--metric judge``); too few judgements refuse the verdict.
        ``extra``: more evidence for the ledger (the reviewer's record).
        With ``reward_count``, τ's first ``reward_count`` pairs are the reward set, whose gain is the verdict's
        reward, and the rest the sealed acceptance set, whose gain (and scores) the decision reads.
        ``earlier``: the questions of the passages that model learned before (by context id), which the
        answers' tails hold. ``on_top_of``: the served stack ``base`` is (signed into the verdict: the registry
        promotes the candidate only onto that stack).
        """
        n = reward_count or 0
        base_scores, cand_scores = scores(tau[n:], base.questions(n)), scores(tau[n:], cand.questions(n))
        passages = earlier_passages(earlier or {}, base.earlier_answers, cand.earlier_answers)
        extra = {**(extra or {}), **({"judge": judged.detail} if judged else {})}
        if judged is not None:
            if judged.problem:
                return self.refuse(context_id, item, judged.problem, vetoes, extra)
            base_scores, cand_scores = judged.scored(base_scores, cand_scores)
        gain = getattr(cand_scores, self.config.metric) - getattr(base_scores, self.config.metric)
        reward = gain
        if reward_count is not None:
            reward_sets = scores(tau[:n], base.questions(0, n)), scores(tau[:n], cand.questions(0, n))
            reward = getattr(reward_sets[1], self.config.metric) - getattr(reward_sets[0], self.config.metric)
        drop = _mean(base.retention_logliks) - _mean(cand.retention_logliks)
        if not (math.isfinite(gain) and math.isfinite(reward) and math.isfinite(drop)):
            return self.refuse(context_id, item, "its scores are not finite (did training diverge?)", vetoes, extra)
        accepted, reason = self._rule(gain, drop, vetoes, passages)
        details = {
            "thresholds": {
                "min_gain": self.config.min_gain,
                "max_retention_drop": self.config.max_retention_drop,
                "max_earlier_drop": self.config.max_earlier_drop,
                "probe_answers_may_lose": self.config.probe_answers_may_lose,
                "probe_min_agreement": self.config.probe_min_agreement,
            },
            "per_question": _per_question(tau, base, cand),
            "retention": _retention_detail(self.retention, base, cand),
            "earlier": [asdict(p) | {"drop": p.drop} for p in passages],
            **extra,
        }
        if reward_count is not None:  # per_question lists the reward set first, then the acceptance set
            details["sets"] = {"reward": n, "acceptance": len(tau) - n}
        earlier_drop = max((p.drop for p in passages), default=0.0)
        return self._conclude(
            context_id, item, accepted, reason, (reward, drop), (base_scores, cand_scores), vetoes, details,
            earlier_drop,
            on_top_of or [],
        )

    def refuse(
        self,
        context_id: str,
        item: CandidateToJudge,
        why: str,
        vetoes: list[Veto] | None = None,
        details: dict[str, Any] | None = None,
    ) -> Verdict:
        """A candidate rejected without a full evaluation (bad artifact, vetoed text, diverged scores, too few
        judgements); ``details`` is what the ledger records of the evidence there was."""
        return self._conclude(
            context_id, item, False, f"not evaluated: {why}", (0.0, 0.0), (EMPTY_SCORES, EMPTY_SCORES), vetoes or [],
            details or {},
        )  # fmt: skip

    def _rule(
        self, gain: float, drop: float, vetoes: list[Veto], passages: list[EarlierPassage]
    ) -> tuple[bool, str]:
        """Accepted, and why; a rejection names every reason, not just the first."""
        metric, cfg = self.config.metric, self.config
        failures = []
        if vetoes:
            failures.append("vetoed: " + "; ".join(f"{v.reviewer}: {v.reason}" for v in vetoes))
        if drop > cfg.max_retention_drop:
            failures.append(f"retention dropped by {drop:.3f} > {cfg.max_retention_drop} nats/token")
        forgotten = earlier_failure(passages, cfg.max_earlier_drop)
        if forgotten:
            failures.append(forgotten)
        if gain < cfg.min_gain:
            failures.append(f"{metric} gain {gain:+.3f} is below the minimum {cfg.min_gain}")
        if failures:
            return False, " | ".join(failures)
        kept = f", earlier passages' largest drop {max(p.drop for p in passages):.2f}" if passages else ""
        return True, f"{metric} gain {gain:+.3f} >= {cfg.min_gain}, retention drop {drop:.3f}{kept}"

    def _conclude(
        self,
        context_id: str,
        item: CandidateToJudge,
        accepted: bool,
        reason: str,
        gain_drop: tuple[float, float],
        base_cand: tuple[Scores, Scores],
        vetoes: list[Veto],
        details: dict[str, Any],
        earlier_drop: float = 0.0,
        on_top_of: list[str] | None = None,
    ) -> Verdict:
        verdict = Verdict(
            context_id=context_id,
            self_edit_id=item.self_edit.self_edit_id,
            adapter_id=item.candidate.adapter.adapter_id,
            accepted=accepted,
            metric=self.config.metric,
            reward=gain_drop[0],
            base=base_cand[0],
            candidate=base_cand[1],
            retention_drop=gain_drop[1],
            earlier_drop=earlier_drop,
            on_top_of=on_top_of or [],
            vetoes=vetoes,
            reason=reason,
            self_edit_sha256=self_edit_sha256(item.self_edit),
            ledger_entry="",
        )
        if self.signing_key is not None:
            verdict = sign_verdict(verdict, self.signing_key)
        record = {
            "adapter_id": verdict.adapter_id,
            "context_id": context_id,
            "accepted": accepted,
            "reason": reason,
            "student_model": self.config.model,
            "verdict": verdict.model_dump(mode="json"),
            "self_edit": item.self_edit.model_dump(mode="json"),
            "training": item.candidate.model_dump(mode="json", exclude={"adapter"}),
            **details,
        }
        entry = self.ledger.append("verdict", record)
        return verdict.model_copy(update={"ledger_entry": entry})


def scores(tau: list[QAItem], result: ModelResult) -> Scores:
    """Aggregate EM, F1, answer recall and gold log-likelihood of one model on τ."""
    pairs = list(zip(tau, result.answers, strict=True))
    return Scores(
        exact_match=_mean([exact_match(a, q.answers) for q, a in pairs]),
        f1=_mean([f1_score(a, q.answers) for q, a in pairs]),
        loglik=_mean(result.gold_logliks),
        answer_recall=_mean([answer_recall(a, q.answers) for q, a in pairs]),
        n_questions=len(tau),
    )


def _per_question(tau: list[QAItem], base: ModelResult, cand: ModelResult) -> list[dict[str, Any]]:
    rows = zip(tau, base.answers, cand.answers, base.gold_logliks, cand.gold_logliks, strict=True)
    return [
        {
            "question": q.question,
            "gold": q.answers,
            "base_answer": ba,
            "candidate_answer": ca,
            "base_loglik": bl,
            "candidate_loglik": cl,
            "candidate_f1": f1_score(ca, q.answers),
            "base_right": bool(answer_recall(ba, q.answers)),
            "candidate_right": bool(answer_recall(ca, q.answers)),
        }
        for q, ba, ca, bl, cl in rows
    ]


def _retention_detail(retention: list[QAItem], base: ModelResult, cand: ModelResult) -> list[dict[str, Any]]:
    rows = zip(
        retention,
        base.retention_answers,
        cand.retention_answers,
        base.retention_logliks,
        cand.retention_logliks,
        strict=True,
    )
    return [
        {"question": q.question, "base_answer": ba, "candidate_answer": ca, "base_loglik": bl, "candidate_loglik": cl}
        for q, ba, ca, bl, cl in rows
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
