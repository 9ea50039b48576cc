"""How a question is put to the student: one format shared by answering and scoring; and a prompt to a local model.

The student generates answers from this prompt, and the auditor scores the
gold answer's likelihood after the very same prompt, so the two must agree. The
answer instruction is the auditor's to choose (it owns the evaluation): it sends
it with every ``AnswerQuestions`` request and scores under the same one.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

ANSWER_INSTRUCTION = "Answer the question with only the short answer: a name, a number, a date or a few words."


def question_prompt(tokenizer: PreTrainedTokenizerBase, question: str, instruction: str | None = None) -> str:
    """The text after which the model's answer begins.

    ``instruction`` goes before the question (a system message where the tokenizer has a chat template):
    None means :data:`ANSWER_INSTRUCTION`, an empty string no instruction at all.
    """
    instruction = ANSWER_INSTRUCTION if instruction is None else instruction
    if getattr(tokenizer, "chat_template", None):
        system = [{"role": "system", "content": instruction}] if instruction else []
        messages = [*system, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{instruction}\nQuestion: {question}\nAnswer:" if instruction else f"Question: {question}\nAnswer:"


def clean_answer(text: str) -> str:
    """The first line of a generated answer, stripped: closed-book answers are short."""
    stripped = text.strip()
    return stripped.splitlines()[0].strip() if stripped else ""


def as_chat(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The text a local model is given for ``prompt``: one user turn, when the tokenizer has a chat template.

    Sampling and the teacher's M-step both use this, so the teacher learns on the very text it samples from.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt
