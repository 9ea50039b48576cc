"""The question prompt's answer instruction (the auditor's to set), and right answers shown as counts."""

from __future__ import annotations

from library.models import load_tokenizer
from library.qa_format import ANSWER_INSTRUCTION, question_prompt
from protocol.messages import Scores
from teacher.report import right_answers


def test_the_answer_instruction_is_the_standard_one_a_custom_one_or_none(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    standard = question_prompt(tokenizer, "Who?")
    assert f"system\n{ANSWER_INSTRUCTION}" in standard
    assert "system\nBe brief." in question_prompt(tokenizer, "Who?", "Be brief.")
    bare = question_prompt(tokenizer, "Who?", "")
    assert "system" not in bare and bare.endswith("user\nWho?<|im_end|>\n<|im_start|>assistant\n")


def test_right_answers_are_counts_out_of_the_questions():
    scores = Scores(exact_match=0.0, f1=0.1, loglik=-2.0, answer_recall=0.6, n_questions=5)
    assert right_answers(scores) == "3/5"
