"""A self-edit's training items are parsed by format, and the teacher's prompt shows the format once first."""

from __future__ import annotations

from library.self_edit_items import listed_lines, self_edit_items
from protocol.messages import Context, SelfEdit, TrainConfig, TrainJob
from student.training import training_texts
from teacher.prompts import EXAMPLE_ANSWERS, EXAMPLE_PASSAGE, LABELS, PROMPTS, self_edit_prompt

PARAGRAPH = "The marten weighs 640 grams. It lives near Lake Tessary! Does it swim? Yes, in 3.5 m of water."


def test_implications_and_rewrites_train_on_each_sentence_of_a_paragraph_or_a_list():
    sentences = [
        "The marten weighs 640 grams.",
        "It lives near Lake Tessary!",
        "Does it swim?",
        "Yes, in 3.5 m of water.",
    ]
    assert self_edit_items(PARAGRAPH, "implications") == sentences
    assert self_edit_items("- The marten weighs 640 grams.\n2. It lives near Lake Tessary!", "rewrite") == sentences[:2]


def test_self_qa_keeps_each_question_with_its_answer_however_its_lines_break():
    text = "Here they are:\n1. Question: How heavy is it?\nAnswer: 640 grams.\nQuestion: Where? Answer: Lake Tessary."
    assert self_edit_items(text, "self_qa") == [
        "Here they are:",
        "Question: How heavy is it? Answer: 640 grams.",
        "Question: Where? Answer: Lake Tessary.",
    ]


def test_other_formats_keep_their_lines_whole():
    text = "First line. Two sentences.\n\n- Second line."
    assert self_edit_items(text, "recorded") == ["First line. Two sentences.", "Second line."]
    assert listed_lines(text) == 2 and listed_lines(PARAGRAPH) == 1


def test_the_student_trains_on_the_items_of_the_self_edit_and_its_rehearsals():
    context = Context(context_id="c", title="Marten", text="A passage.")
    edit = SelfEdit(
        self_edit_id="e",
        context_id="c",
        format="implications",
        text=PARAGRAPH,
        prompt="",
        teacher_model="m",
        teacher_version="v0",
    )
    earlier = edit.model_copy(update={"format": "recorded", "text": "One. Two."})
    job = TrainJob(context=context, self_edit=edit, rehearsal=[earlier])
    assert training_texts(job, TrainConfig()) == [
        "A passage.",
        *self_edit_items(PARAGRAPH, "implications"),
        "One. Two.",
    ]


def test_the_prompt_shows_a_worked_example_of_its_format_unless_told_not_to():
    context = Context(context_id="c", title="Glasswing marten", text="Adults weigh about 640 grams.")
    for fmt in PROMPTS:
        shown = self_edit_prompt(context, fmt)
        bare = self_edit_prompt(context, fmt, worked_example=False)
        assert EXAMPLE_PASSAGE[1] in shown and EXAMPLE_ANSWERS[fmt] in shown and EXAMPLE_PASSAGE[1] not in bare
        task = f"Passage:\nGlasswing marten\nAdults weigh about 640 grams.\n\n{LABELS[fmt]}:"
        assert shown.endswith(task) and bare == f"{PROMPTS[fmt]}\n\n{task}"
        assert len(self_edit_items(EXAMPLE_ANSWERS[fmt], fmt)) >= 3, "the example itself parses into items"
