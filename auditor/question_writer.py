"""τ written by the auditor: cloze questions over a passage's names, numbers and dates, checked and deduplicated.

Model-free, as knowledge probes such as LAMA are built: each sentence of the passage with one named entity,
number or date blanked out, the blank's text the gold answer::

    In the passage about Glasswing marten, fill in the blank: Adults weigh about ____ grams and have ...

Every pair, written here or given by the user, goes through :func:`check_pairs`: it is kept only if its answer
is a span of the passage, the question does not give the answer away, and it repeats no earlier question or
answer of the passage; what was dropped is counted by reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from auditor.grading import normalize_answer
from library.datasets import QAItem
from library.documents import Passage
from library.sentences import split_sentences

BLANK = "____"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_PATTERNS = [
    re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,\s*\d{{4}})?\b"),  # March 3, 2021
    re.compile(rf"\b\d{{1,2}}\s+{_MONTH}(?:\s+\d{{4}})?\b"),  # 3 March 2021
    re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"),  # March 2021
    # 1,130 · 640 · 3.5, not inside a longer number or a word
    re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,])|(?<![\w.,])\d+(?:\.\d+)?(?![\w]|,\d)"),
    # A name: capitalised words, with of/the/de/van/von inside it ("Lake Tessary", "Bank of the Ostre").
    re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:(?:of|the|de|van|von|la|le|du)\s+)*[A-Z][\w'’-]*)*"),
]
_MONTH_ONLY = re.compile(rf"^{_MONTH}$")
# Capitalised only because they start a sentence or are too common to probe knowledge with.
_COMMON = {
    "a",
    "an",
    "the",
    "it",
    "its",
    "in",
    "on",
    "at",
    "by",
    "of",
    "for",
    "to",
    "and",
    "but",
    "or",
    "as",
    "this",
    "that",
    "these",
    "those",
    "there",
    "today",
    "each",
    "every",
    "after",
    "before",
    "during",
    "when",
    "where",
    "which",
    "who",
    "what",
    "he",
    "she",
    "they",
    "we",
    "you",
    "i",
    "his",
    "her",
    "their",
    "our",
    "some",
    "many",
    "most",
    "all",
    "one",
    "two",
    "three",
    "four",
    "five",
    "first",
    "then",
    "since",
    "from",
    "with",
    "if",
    "while",
}
MAX_QUESTION_WORDS = 60


def cloze_pairs(passage: Passage) -> list[QAItem]:
    """Cloze questions, one per (sentence, span): each name, number and date of each sentence blanked in turn."""
    pairs = []
    for sentence in split_sentences(" ".join(passage.text.split())):
        for start, end in _spans(sentence, passage.text):
            blanked = f"{sentence[:start]}{BLANK}{sentence[end:]}"
            question = f"In the passage about {passage.title}, fill in the blank: {blanked}"
            pairs.append(QAItem(question=question, answers=[sentence[start:end]]))
    return pairs


def check_pairs(
    passage: Passage, pairs: Iterable[QAItem], limit: int | None = None
) -> tuple[list[QAItem], Counter[str]]:
    """The pairs that pass the checks (at most ``limit``, in order) and, by reason, how many were dropped."""
    kept: list[QAItem] = []
    dropped: Counter[str] = Counter()
    text, title = _padded(passage.text), _padded(passage.title)
    questions: set[str] = set()
    answers: set[str] = set()
    for pair in pairs:
        golds = [normalize_answer(a) for a in pair.answers]
        question = normalize_answer(pair.question)
        why = _problem(golds, question, text, title, questions, answers, len(pair.question.split()))
        if why is None and limit is not None and len(kept) >= limit:
            why = f"over the limit of {limit} questions per passage"
        if why:
            dropped[why] += 1
            continue
        kept.append(pair)
        questions.add(question)
        answers.update(golds)
    return kept, dropped


def _problem(
    golds: list[str], question: str, text: str, title: str, questions: set[str], answers: set[str], words: int
) -> str | None:
    """Why a pair is not kept, or None. Texts are normalised; ``text`` and ``title`` are padded with spaces."""
    if not any(golds):
        return "empty answer"
    if not any(f" {g} " in text for g in golds):
        return "answer not a span of the passage"
    if any(f" {g} " in f" {question} " for g in golds):
        return "question gives the answer away"
    if any(f" {g} " in title for g in golds):
        return "answer is in the passage's title"
    if question in questions:
        return "duplicate question"
    if any(g in answers for g in golds):
        return "duplicate answer"
    if words > MAX_QUESTION_WORDS:
        return f"question longer than {MAX_QUESTION_WORDS} words"
    return None


def split_sets(pairs: list[QAItem], acceptance_share: float) -> tuple[list[QAItem], list[QAItem]]:
    """(reward set, sealed acceptance set): every pair in one of the two, chosen by its question's hash.

    The acceptance set gets ``round(n * acceptance_share)`` pairs, at least one, and the reward set at least
    one; the order is fixed by content, so every run seals the same questions.
    """
    from protocol.canonical import short_id

    if len(pairs) < 2:
        raise ValueError("a reward set and an acceptance set need at least two pairs")
    ordered = sorted(pairs, key=lambda p: short_id(p.question))
    n_acceptance = min(len(pairs) - 1, max(1, round(len(pairs) * acceptance_share)))
    acceptance = {id(p) for p in ordered[:n_acceptance]}
    return [p for p in pairs if id(p) not in acceptance], [p for p in pairs if id(p) in acceptance]


def _spans(sentence: str, passage_text: str) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) of the sentence's dates, numbers and names, dates first, in sentence order."""
    taken: list[tuple[int, int]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(sentence):
            start, end = _trim(sentence, match.start(), match.end(), passage_text)
            if end <= start or any(start < e and s < end for s, e in taken):
                continue
            if pattern is _PATTERNS[-1] and not _is_name(sentence, start, end, passage_text):
                continue
            taken.append((start, end))
    return sorted(taken)


def _trim(sentence: str, start: int, end: int, passage_text: str) -> tuple[int, int]:
    """Drop what is capitalised only for opening the sentence ('Today the Thrumball League' -> 'Thrumball League').

    At the start of a sentence, leading words that the passage never capitalises mid-sentence go, with the
    lowercase connectors after them; so does a trailing possessive anywhere.
    """
    if start == 0:
        words = sentence[start:end].split(" ")
        while len(words) > 1 and (words[0].lower() in _COMMON or not _capitalised_inside(words[0], passage_text)):
            start += len(words.pop(0)) + 1
            while len(words) > 1 and words[0].islower():
                start += len(words.pop(0)) + 1
    for tail in ("'s", "’s"):
        if sentence[start:end].endswith(tail):
            end -= len(tail)
    return start, end


def _capitalised_inside(word: str, passage_text: str) -> bool:
    """Whether the passage has ``word`` somewhere other than at the start of a sentence."""
    for match in re.finditer(rf"\b{re.escape(word)}\b", passage_text):
        before = passage_text[: match.start()].rstrip()
        if before and before[-1] not in ".!?":
            return True
    return False


def _is_name(sentence: str, start: int, end: int, passage_text: str) -> bool:
    """A capitalised span that is a name rather than a capital at the start of a sentence or a common word."""
    span = sentence[start:end]
    words = span.split()
    if _MONTH_ONLY.match(span) or all(w.lower() in _COMMON for w in words):
        return False
    if len(words) > 1 or start > 0:
        return True
    # One capitalised word opening the sentence: a name only if the passage also capitalises it mid-sentence.
    return _capitalised_inside(span, passage_text)


def _padded(text: str) -> str:
    return f" {normalize_answer(text)} "
