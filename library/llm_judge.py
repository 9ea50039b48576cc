"""An LLM judge for closed-book answers: the SEAL paper's yes/no protocol at temperature 0.

The judge is any :class:`library.completions.Completer`: a teacher backend (``openai:MODEL``,
``anthropic:MODEL``, a local model) in the knowledge bench, the auditor's API model for ``--metric judge``. It
sees the question, the gold answer(s) and the predicted answer, and must begin its reply with yes
or no. A call that fails after the backend's retries, a refusal, or a reply that is neither yes
nor no is a *failed* judgement (``None``): it is counted and reported as such, never as wrong.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from library.backend_errors import TeacherBackendError
from library.completions import Completer
from protocol.messages import SamplingConfig

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You are grading a closed-book answer against the gold answer.\n"
    "Question: {question}\n"
    "Gold answer: {gold}\n"
    "Predicted answer: {prediction}\n"
    "Is the predicted answer correct, meaning it gives the same fact as the gold answer? "
    "Answer with one word: yes or no."
)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=4, seed=0)
_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Judgement:
    """One graded answer: ``correct`` is None when the judge failed or its reply was not yes/no."""

    correct: bool | None
    reply: str


def judge_prompt(question: str, golds: list[str], prediction: str) -> str:
    """The prompt for one answer; several gold spellings are joined with ' / '."""
    return JUDGE_PROMPT.format(question=question, gold=" / ".join(golds), prediction=prediction or "(no answer)")


def parse_verdict(reply: str) -> bool | None:
    """True for a reply starting with yes, False for no, None for anything else."""
    match = _VERDICT.match(reply)
    return None if match is None else match.group(1).lower() == "yes"


class LLMJudge:
    """Grades (question, golds, prediction) triples with a backend, in batches."""

    def __init__(self, backend: Completer, batch_size: int = 16):
        self.backend = backend
        self.batch_size = batch_size

    def grade(self, items: list[tuple[str, list[str], str]]) -> list[Judgement]:
        """One judgement per item, in order; a failed batch gives failed judgements, not an exception."""
        out: list[Judgement] = []
        for start in range(0, len(items), self.batch_size):
            prompts = [judge_prompt(*item) for item in items[start : start + self.batch_size]]
            try:
                rows = self.backend.complete(prompts, 1, GREEDY)
            except TeacherBackendError as exc:
                log.warning("judge %s failed on %d answers: %s", self.backend.model_id, len(prompts), exc)
                out += [Judgement(None, f"error: {exc}") for _ in prompts]
                continue
            rows = rows + [[]] * (len(prompts) - len(rows))  # a backend that answered fewer: those failed
            for row in rows[: len(prompts)]:
                completion = row[0] if row else None
                if completion is None or completion.refusal is not None:
                    out.append(Judgement(None, completion.refusal if completion else "error: no completion"))
                else:
                    out.append(Judgement(parse_verdict(completion.text), completion.text))
        return out
