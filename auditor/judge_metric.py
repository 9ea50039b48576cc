"""``--metric judge``: the paper's reward, an LLM judge's yes/no on each closed-book answer, on the auditor.

The judge's model, address and key are configured on the auditor alone (``--judge.model``,
``--judge.key-file``): the key is read in the auditor process and never reaches a message, the
teacher, the student or the ledger. A failed call, a refusal or a reply that is neither yes nor no is
a *failed* judgement: recorded as such, never counted as right or wrong. The score of base and
candidate is the share judged right over the questions judged for both (so the gain compares like
with like); a verdict on fewer of them than ``--judge.min-judged-share`` of τ is refused, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from library.api_models import APIModelConfig, connect
from library.datasets import QAItem
from library.llm_judge import JUDGE_PROMPT, Judgement, LLMJudge
from protocol.messages import Scores


class JudgeConfig(APIModelConfig):
    """The auditor's LLM judge (``--metric judge``)."""

    min_judged_share: float = Field(
        0.8, gt=0, le=1, description="Refuse a verdict unless this share of τ was judged for base and candidate."
    )
    batch_size: int = Field(16, ge=1, description="Answers sent to the judge per batch.")


@dataclass(frozen=True)
class JudgeOutcome:
    """Base and candidate shares judged right, the ledger's detail, and why they cannot decide (or None)."""

    base: float | None
    candidate: float | None
    detail: dict[str, Any]
    problem: str | None

    def scored(self, base: Scores, candidate: Scores) -> tuple[Scores, Scores]:
        """``base`` and ``candidate`` with their ``judge`` share set."""
        return base.model_copy(update={"judge": self.base}), candidate.model_copy(update={"judge": self.candidate})


class JudgeMetric:
    """Grades τ answers with the configured judge; built (and its server checked) when the auditor starts."""

    def __init__(self, config: JudgeConfig):
        self.config = config
        self.judge = LLMJudge(connect(config), batch_size=config.batch_size)
        self.model_id = self.judge.backend.model_id

    def grade(self, tau: list[QAItem], answers: list[str]) -> list[Judgement]:
        """One judgement per τ question, in order (failed ones have ``correct is None``)."""
        return self.judge.grade([(q.question, q.answers, a) for q, a in zip(tau, answers, strict=True)])

    def compare(self, tau: list[QAItem], base: list[Judgement], cand: list[Judgement]) -> JudgeOutcome:
        """Shares judged right for base and candidate, over the questions judged for both."""
        both = [i for i in range(len(tau)) if base[i].correct is not None and cand[i].correct is not None]
        detail = {
            "model": self.model_id,
            "prompt": JUDGE_PROMPT,
            "judged_both": len(both),
            "questions": len(tau),
            "min_judged_share": self.config.min_judged_share,
            "per_question": [
                {"question": q.question, "base": _label(b), "base_reply": b.reply, "candidate": _label(c),
                 "candidate_reply": c.reply}
                for q, b, c in zip(tau, base, cand, strict=True)
            ],
        }  # fmt: skip
        share = len(both) / len(tau) if tau else 0.0
        if share < self.config.min_judged_share:
            failed = next((j.reply for j in [*base, *cand] if j.correct is None), "")
            problem = (
                f"the judge {self.model_id} graded only {len(both)} of {len(tau)} questions for both models "
                f"(minimum share {self.config.min_judged_share:g}); a failed judgement: {failed[:120]!r}"
            )
            return JudgeOutcome(None, None, detail, problem)
        base_right = sum(bool(base[i].correct) for i in both) / len(both)
        cand_right = sum(bool(cand[i].correct) for i in both) / len(both)
        return JudgeOutcome(base_right, cand_right, detail, None)


def _label(judgement: Judgement) -> str:
    return "failed" if judgement.correct is None else ("right" if judgement.correct else "wrong")
