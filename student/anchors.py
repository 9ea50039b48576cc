"""Anchors: the base model's own answers to general questions, trained beside a passage to keep what it knew.

A LoRA update trained hard on one passage forgets general facts (``bench/results/probe_loss/``: at the paper's
1e-3 x 10 the embedded model lost 6.8 of the auditor's 9 probe facts). With ``TrainConfig.anchors = n`` the
student adds n sequences to every candidate's training: n questions spread evenly over ``library/data/anchors.json``
(its topics come in runs: capitals, science, numbers, people, nature; the first 16 alone were all geography and
astronomy), asked as the student asks any question, each followed by the unadapted base model's own greedy answer — a
rehearsal of its own behaviour (self-distillation), which needs no answer key. The questions are the student's,
disjoint from the auditor's probes and retention set, so those stay a held-out check of what was kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from library.qa_format import question_prompt

ANCHORS_FILE = Path(__file__).resolve().parents[1] / "library" / "data" / "anchors.json"
ANCHOR_TOKENS = 32
"""Most tokens of a base answer kept as an anchor (the answers asked for are short)."""


def anchor_questions(n: int) -> list[str]:
    """``n`` anchor questions spread evenly over the file, in its order; a ValueError when there are fewer."""
    questions: list[str] = json.loads(ANCHORS_FILE.read_text())
    if n > len(questions):
        raise ValueError(f"anchors={n}, but the student has {len(questions)} anchor questions")
    return [questions[i * len(questions) // n] for i in range(n)]


def anchor_texts(tokenizer: PreTrainedTokenizerBase, questions: list[str], answers: list[str]) -> list[str]:
    """Each question as the student is asked it, followed by the base model's answer: one training sequence each."""
    return [question_prompt(tokenizer, q) + a for q, a in zip(questions, answers, strict=True)]
