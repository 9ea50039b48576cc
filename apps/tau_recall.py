"""Which τ does the base model fail? Its answer recall on each question writer's pairs, over the demo documents.

Run: ``python -m apps.tau_recall [--model SPEC] [--threads 1]`` (the embedded default model, CPU, a few minutes).

For each of the ten built-in demo documents: the hand-written τ that ships with it, and the pairs the auditor
writes from the same passage (:mod:`auditor.question_writer`, after its checks; the reward and acceptance sets
together) and by the auditor's own model (:mod:`auditor.model_question_writer`, the same checks). The base
model answers every question greedily through the student's own prompt and decoder
(:func:`student.answering.generate_answers`); an answer is right when it contains the normalised gold answer
(:func:`auditor.grading.answer_recall`). Questions the base model already answers cannot show learning.
"""

from __future__ import annotations

import argparse
import json

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from auditor.grading import answer_recall, mean_ci95
from auditor.model_question_writer import model_pairs
from auditor.question_writer import check_pairs, cloze_pairs
from library.datasets import DEMO_DOCUMENTS, QAItem, load_contexts, load_questions
from library.documents import Passage
from library.model_specs import DEFAULT_MODEL
from library.models import load_model
from student.answering import generate_answers

WRITERS = ("hand-written", "cloze", "model")


def question_sets(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, writers: list[str], limit: int | None = None
) -> dict[str, list[QAItem]]:
    """Each writer's pairs over the demo documents: 'hand-written' (shipped τ), 'cloze' and 'model' (the auditor's)."""
    contexts = load_contexts(DEMO_DOCUMENTS, limit=limit)
    hand = load_questions(DEMO_DOCUMENTS, limit=limit)
    sets: dict[str, list[QAItem]] = {}
    if "hand-written" in writers:
        sets["hand-written"] = [q for c in contexts for q in hand[c.context_id]]
    for writer in [w for w in writers if w != "hand-written"]:
        sets[writer] = []
        for c in contexts:
            passage = Passage("demo", c.title, c.text)
            written = cloze_pairs(passage) if writer == "cloze" else model_pairs(model, tokenizer, passage)
            kept, dropped = check_pairs(passage, written, limit=10)
            print(f"{writer} {c.title}: {len(written)} written, {len(kept)} kept, dropped {dict(dropped)}", flush=True)
            sets[writer] += kept
    return sets


def main(argv: list[str] | None = None) -> None:
    """Print, per writer, the base model's answer recall with its 95% interval, and write the answers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Base model (default: the embedded SmolLM2).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N demo documents.")
    parser.add_argument("--answer-tokens", type=int, default=24, help="Most tokens per answer (the auditor's).")
    parser.add_argument(
        "--writers", nargs="+", default=list(WRITERS), choices=WRITERS, help="Question sets to measure (default: all)."
    )
    parser.add_argument("--out", default=None, help="Write every question, gold and answer to this JSON file.")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, "cpu")
    records = []
    for writer, pairs in question_sets(model, tokenizer, args.writers, args.limit).items():
        if not pairs:
            print(f"| {writer} | 0 | - | (no pair survived the checks)", flush=True)
            continue
        answers = generate_answers(model, tokenizer, [p.question for p in pairs], args.answer_tokens)
        right = [answer_recall(a, p.answers) for p, a in zip(pairs, answers, strict=True)]
        mean, half = mean_ci95(right)
        print(f"| {writer} | {len(pairs)} | {mean:.3f} ± {half:.3f} | (base answer recall, 95% CI)", flush=True)
        records += [
            {"writer": writer, "question": p.question, "gold": p.answers, "answer": a, "right": r}
            for p, a, r in zip(pairs, answers, right, strict=True)
        ]
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(records, handle, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
