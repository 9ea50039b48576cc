"""SQuAD v1.1 answer grading: normalisation, exact match, token F1, answer recall, and a 95% CI for a mean.

Follows the definition in the official v1.1 evaluation script: an answer is
lowercased, ASCII punctuation is removed, the articles *a*, *an* and *the* are
removed as whole words, and whitespace is collapsed. Exact match and F1 are each
the maximum over the gold answers of a question, and so is answer recall, which
is not in the v1.1 script: a small model answers in sentences ("It weighs about
640 grams."), which F1 against a two-word gold answer scores near zero though
the answer is right.
"""

from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter

# The v1.1 script strips exactly `string.punctuation` (ASCII); other Unicode punctuation is kept.
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Two-sided 95% quantile of the standard normal (≈ 1.96).
_Z95 = statistics.NormalDist().inv_cdf(0.975)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    _require_golds(golds)
    pred = normalize_answer(prediction)
    return max(float(pred == normalize_answer(gold)) for gold in golds)


def f1_score(prediction: str, golds: list[str]) -> float:
    """Best token-level F1 of the prediction against any gold answer.

    As in SQuAD v1.1, an answer that normalises to nothing scores 0 F1 even
    against a gold answer that also normalises to nothing.
    """
    _require_golds(golds)
    pred_tokens = normalize_answer(prediction).split()
    return max(_token_f1(pred_tokens, normalize_answer(gold).split()) for gold in golds)


def answer_recall(prediction: str, golds: list[str]) -> float:
    """1.0 if some normalised gold answer is contained in the normalised prediction, as whole words, else 0.0.

    "640 grams" is in "it weighs about 640 grams"; "4" is not in "1846". A gold answer that normalises to
    nothing is never contained (as for F1).
    """
    _require_golds(golds)
    pred = f" {normalize_answer(prediction)} "
    return max(float(bool(gold) and f" {gold} " in pred) for gold in map(normalize_answer, golds))


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a normal-approximation 95% confidence interval.

    The half-width is z · s / √n with the sample standard deviation s; it is
    0.0 when there are fewer than two values.
    """
    if not values:
        raise ValueError("mean_ci95 needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, _Z95 * statistics.stdev(values) / math.sqrt(len(values))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    # Multiset overlap: a token repeated in both counts as many times as it is shared.
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _require_golds(golds: list[str]) -> None:
    # A max over no gold answers has no value; an empty list is a data error, not a score of 0.
    if not golds:
        raise ValueError("at least one gold answer is needed")
