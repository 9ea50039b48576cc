"""A self-edit's training items: the student trains on each as its own sequence, as the paper trains on the items.

The teacher is asked for one item per line, but a small model often writes a paragraph, or puts a question
and its answer on two lines. So the items are parsed by format:

- ``implications`` and ``rewrite``: each sentence of each line (list markers removed);
- ``self_qa``: each ``Question: ... Answer: ...`` pair, wherever its lines break (text before the first
  question is an item of its own);
- any other format (recorded self-edits, few-shot data): each non-empty line, as it is.

    >>> self_edit_items("The marten weighs 640 g. It lives in Tessary.", "implications")
    ['The marten weighs 640 g.', 'It lives in Tessary.']
    >>> self_edit_items("Question: How heavy?\\nAnswer: 640 g.\\nQuestion: Where? Answer: Tessary.", "self_qa")
    ['Question: How heavy? Answer: 640 g.', 'Question: Where? Answer: Tessary.']
"""

from __future__ import annotations

import re

from library.sentences import split_sentences

_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_QUESTION_START = re.compile(r"(?=\b(?:Question|Q)\s*\d*\s*:)")


def self_edit_items(text: str, fmt: str) -> list[str]:
    """The training items of a self-edit of format ``fmt``, in order, each stripped and non-empty."""
    lines = [_LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if fmt in ("implications", "rewrite"):
        return [sentence.strip() for line in lines for sentence in split_sentences(line)]
    if fmt == "self_qa":
        pieces = _QUESTION_START.split(" ".join(lines))
        return [" ".join(piece.split()) for piece in pieces if piece.strip()]
    return lines


def listed_lines(text: str) -> int:
    """How many non-empty lines a self-edit has: whether the teacher wrote a list, as it was asked to."""
    return sum(1 for line in text.splitlines() if line.strip())
