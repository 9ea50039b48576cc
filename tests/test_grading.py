"""SQuAD v1.1 grading: normalisation, exact match, token F1 and the 95% CI, on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from auditor.grading import answer_recall, exact_match, f1_score, mean_ci95, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),  # leading article and case
        ("a cat, an apple and THE dog.", "cat apple and dog"),  # every article, punctuation
        ("  Hello \t  World\n", "hello world"),  # whitespace collapsed
        ("U.S.A.", "usa"),  # punctuation removed, not replaced by spaces
        ("1,000,000", "1000000"),
        ("Theory and anthem", "theory and anthem"),  # articles only as whole words
        ("Denver Broncos'", "denver broncos"),
        ("the", ""),
        ("“Quoted” — text", "“quoted” — text"),  # the v1.1 script strips ASCII punctuation only
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_is_max_over_golds() -> None:
    assert exact_match("The Denver Broncos!", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos", "broncos."]) == 1.0
    assert exact_match("Denver", ["Denver Broncos", "Broncos"]) == 0.0


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("the cat sat on the mat", ["a cat on a mat"], 6 / 7),  # P = 3/4, R = 1
        ("Barack Obama", ["Obama", "President Obama"], 2 / 3),  # best of 2/3 and 1/2
        ("cat cat cat", ["cat"], 0.5),  # overlap counts shared multiplicity: P = 1/3, R = 1
        ("Denver Broncos", ["denver broncos."], 1.0),
        ("Carolina Panthers", ["Denver Broncos"], 0.0),
        ("the", ["the"], 0.0),  # v1.1: answers that normalise to nothing score 0 F1
    ],
)
def test_f1_score(prediction: str, golds: list[str], expected: float) -> None:
    assert f1_score(prediction, golds) == pytest.approx(expected)


def test_empty_gold_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="gold"):
        exact_match("x", [])
    with pytest.raises(ValueError, match="gold"):
        f1_score("x", [])


def test_mean_ci95_known_data() -> None:
    # mean 3, sample sd sqrt(2.5), se = sqrt(0.5); z = 1.959964
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(1.959964 * math.sqrt(0.5), rel=1e-6)
    mean, half = mean_ci95([1.0, 1.0, 0.0, 0.0])  # sd sqrt(1/3), se sqrt(1/12)
    assert mean == 0.5
    assert half == pytest.approx(1.959964 * math.sqrt(1 / 12), rel=1e-6)


def test_mean_ci95_degenerate() -> None:
    assert mean_ci95([0.7]) == (0.7, 0.0)
    assert mean_ci95([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("An adult weighs about 640 grams.", ["640 grams"], 1.0),  # a sentence holding the gold answer
        ("It weighs 640 g.", ["640 grams", "640 g"], 1.0),  # best over the golds
        ("It was founded in 1846.", ["4"], 0.0),  # whole words only: "4" is not in "1846"
        ("The Beatles!", ["beatles"], 1.0),  # normalised on both sides
        ("Paris", ["Paris, France"], 0.0),  # the gold must be contained in the answer, not the other way
        ("anything", ["the"], 0.0),  # a gold answer that normalises to nothing is never contained
    ],
)
def test_answer_recall(prediction: str, golds: list[str], expected: float) -> None:
    assert answer_recall(prediction, golds) == expected
