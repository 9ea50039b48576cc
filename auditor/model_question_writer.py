"""τ written by the auditor's own local model: question-answer pairs about a passage, checked like cloze pairs.

The auditor's scoring model (the student's base model, loaded by the auditor alone) is asked greedily for
``Question: ... Answer: ...`` lines about the passage; the lines that parse become pairs, and
:func:`auditor.question_writer.check_pairs` keeps only those whose answer is a span of the passage.
"""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.datasets import QAItem
from library.documents import Passage

PROMPT = (
    "Read the passage and write five quiz questions about its facts: names, places, numbers and dates. "
    "Write each on one line as 'Question: ... Answer: ...', the answer copied word for word from the passage.\n\n"
    "Passage:\n{title}\n{text}"
)
# A pair on one line or over several: the answer runs to the end of its line.
_PAIR = re.compile(r"Question:\s*(?P<q>.+?)\s*Answer:[ \t]*(?P<a>[^\n]*)", re.IGNORECASE | re.DOTALL)


def parse_pairs(text: str) -> list[QAItem]:
    """The ``Question: ... Answer: ...`` pairs of a generation (answers stripped of a final full stop)."""
    pairs = []
    for match in _PAIR.finditer(text):
        question = " ".join(match.group("q").split())
        answer = match.group("a").strip().rstrip(".").strip()
        if question and answer:
            pairs.append(QAItem(question=question, answers=[answer]))
    return pairs


@torch.no_grad()
def model_pairs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, passage: Passage, max_new_tokens: int = 200
) -> list[QAItem]:
    """The pairs ``model`` writes about ``passage`` (greedy, so every run writes the same), before any check."""
    content = PROMPT.format(title=passage.title, text=passage.text)
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    else:
        prompt = content + "\n\n"
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    out = model.generate(
        **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )  # (1, prompt + new)
    return parse_pairs(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
