"""Splitting text into sentences, the one rule every part of seal uses (documents, cloze questions, self-edits)."""

from __future__ import annotations

import re

# A sentence ends at . ! or ? followed by space and a capital, a digit or an opening quote/bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(\[])")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace kept inside each, empty pieces dropped.

    >>> split_sentences("Adults weigh 640 g. They live in Tessary. e.g. not here")
    ['Adults weigh 640 g.', 'They live in Tessary. e.g. not here']
    """
    return [piece for piece in _SENTENCE_END.split(text) if piece.strip()]
