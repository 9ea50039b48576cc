"""τ written by a model: question-answer pairs about a passage, checked like cloze pairs.

Two writers, one prompt: the auditor's own local model (the student's base model, loaded by the auditor
alone, greedy: :func:`model_pairs`), or an API model configured on the auditor only (temperature 0:
:func:`api_pairs`). Each is asked for ``Question: ... Answer: ...`` lines about the passage; the lines
that parse become pairs, and :func:`auditor.question_writer.check_pairs` keeps only those whose answer is
a span of the passage. An API model is asked once per passage where a cache file is given
(:func:`cached_pairs`): what it wrote is read back by every later reader of the same documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.completions import Completer
from library.datasets import QAItem
from library.documents import Passage
from library.jsonl import append_jsonl, read_jsonl
from protocol.messages import SamplingConfig

PROMPT = (
    "Read the passage and write five quiz questions about its facts: names, places, numbers and dates. "
    "Write each on one line as 'Question: ... Answer: ...', the answer copied word for word from the passage.\n\n"
    "Passage:\n{title}\n{text}"
)
PairWriter = Callable[[Passage], list[QAItem]]
"""Who writes a passage's question-answer pairs (before any check)."""

API_SAMPLING = SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=400, seed=0)
"""How an API model writes τ: at temperature 0 and with a seed where the API takes them (Anthropic's takes
neither). Neither makes a hosted model repeat itself: :func:`cached_pairs` does."""

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
    content = writer_prompt(passage)
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


def api_pairs(client: Completer, passage: Passage) -> list[QAItem]:
    """The pairs an API model writes about ``passage``, before any check; a failed request raises
    :class:`library.backend_errors.TeacherBackendError` (after the client's retries), a refusal writes none."""
    [[completion]] = client.complete([writer_prompt(passage)], 1, API_SAMPLING)
    return parse_pairs(completion.text)


def writer_prompt(passage: Passage) -> str:
    """What either writer is asked about ``passage`` (the local model gets it inside its chat template)."""
    return PROMPT.format(title=passage.title, text=passage.text)


def cached_pairs(write: PairWriter, path: Path, writer_id: str) -> PairWriter:
    """``write``, asked at most once per passage and writer: what it wrote is appended to ``path`` (JSONL) and
    read back from there, by this process and by any later one given the same file, so the launcher's check and
    the auditor hold the same pairs and a rerun asks nothing again. A request that failed is not kept."""
    kept = {(row["writer"], row["passage"]): row["pairs"] for row in read_jsonl(path)} if path.exists() else {}

    def cached(passage: Passage) -> list[QAItem]:
        key = (writer_id, passage.context_id)
        if key not in kept:
            pairs = write(passage)
            kept[key] = [[q.question, q.answers] for q in pairs]
            path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(path, {"writer": writer_id, "passage": passage.context_id, "pairs": kept[key]})
        return [QAItem(question, answers) for question, answers in kept[key]]

    return cached
