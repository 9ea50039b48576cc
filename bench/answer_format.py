"""What the short-answer instruction does to each score: base and passage-trained adapters, with and without it.

Run (about 5 minutes on 2 CPU cores with the embedded SmolLM2-135M-Instruct):

    python -m bench.answer_format --threads 1            # the ten demo documents and their τ
    python -m bench.answer_format --limit 3 --epochs 2   # a quick look

For every passage, one adapter is trained on the passage alone (the paper's settings, PAPER_TRAIN: r=32, α=64,
lr 1e-3, 10 epochs) through the student's own code; then the base model and each passage's adapter
answer that passage's questions, greedily, once under the auditor's standard short-answer instruction
and once with no instruction, and the auditor's scoring gives exact match, F1, answer recall and the gold
answers' log-likelihood under the same prompt. Results: ``bench/results/answer_format.md`` and ``.json``,
with the exact command.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from auditor.decision import ModelResult, scores
from auditor.grading import answer_recall, mean_ci95
from auditor.scoring import score_models
from bench.results_files import command_line, write_results
from library.datasets import DEMO_DOCUMENTS, load_contexts, load_questions
from library.model_specs import DEFAULT_MODEL
from library.qa_format import ANSWER_INSTRUCTION
from protocol.messages import PAPER_TRAIN, AnswerQuestions, ApplySelfEdits, SelfEdit, TrainJob
from student.config import StudentConfig
from student.service import Student

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {"short-answer instruction": None, "no instruction": ""}
"""Row label -> the AnswerQuestions instruction (None: the standard one, '': none)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Student model.")
    parser.add_argument("--data", type=Path, default=DEMO_DOCUMENTS, help="SQuAD-format passages with τ.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N passages.")
    parser.add_argument("--epochs", type=int, default=10, help="Training epochs per adapter.")
    parser.add_argument("--answer-tokens", type=int, default=24, help="Most tokens per answer (the auditor's).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="Results folder.")
    return parser.parse_args(argv)


def passage_only(context_id: str) -> SelfEdit:
    """An empty self-edit: the adapter trains on the passage alone."""
    return SelfEdit(
        self_edit_id=f"passage-{context_id[:12]}",
        context_id=context_id,
        format="passage_only",
        text="",
        prompt="",
        teacher_model="none",
        teacher_version="v0",
    )


def measure(args: argparse.Namespace, store: Path) -> dict[str, Any]:
    """Train one adapter per passage, then score base and adapters under each instruction."""
    student = Student(StudentConfig(model=args.model, store=store))
    contexts = load_contexts(args.data, limit=args.limit)
    tau = load_questions(args.data, limit=args.limit)
    started = time.perf_counter()
    settings = PAPER_TRAIN.model_copy(update={"epochs": args.epochs})
    jobs = [TrainJob(context=c, self_edit=passage_only(c.context_id), settings=settings) for c in contexts]
    trained = student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates
    train_s = time.perf_counter() - started
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for label, instruction in INSTRUCTIONS.items():
        per_model: dict[str, list[dict[str, Any]]] = {"base": [], "passage adapter": []}
        for context, candidate in zip(contexts, trained, strict=True):
            adapter = candidate.adapter.adapter_id
            questions = tau[context.context_id]
            request = AnswerQuestions(
                questions=[q.question for q in questions],
                adapter_ids=[None, adapter],
                max_new_tokens=args.answer_tokens,
                instruction=instruction,
            )
            answers = {r.adapter_id: r.answers for r in student.answer_questions(request).results}
            folders = {adapter: student.store.path(adapter)}
            logliks = score_models(
                student.model, student.tokenizer, [None, adapter], folders, questions, instruction=instruction
            )
            for name, model_id in (("base", None), ("passage adapter", adapter)):
                given = answers[model_id]
                result = ModelResult(given, logliks[model_id].gold, [], [])
                per_model[name].append(
                    {
                        "context_id": context.context_id,
                        "scores": scores(questions, result).model_dump(),
                        "right": [answer_recall(a, q.answers) for q, a in zip(questions, given, strict=True)],
                        "answers": given,
                    }
                )
        rows[label] = per_model
    return {"train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - started, 1), "rows": rows}


def summary_rows(rows: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per instruction and model: each score's mean over the questions, and right answers as a count."""
    out = []
    for label, per_model in rows.items():
        for name, passages in per_model.items():
            n = sum(p["scores"]["n_questions"] for p in passages)
            means = {
                key: sum(p["scores"][key] * p["scores"]["n_questions"] for p in passages) / n
                for key in ("exact_match", "f1", "answer_recall", "loglik")
            }
            right = [r for p in passages for r in p["right"]]
            out.append(
                {
                    "prompt": label,
                    "model": name,
                    "questions": n,
                    "right": int(sum(right)),
                    "recall_ci95": mean_ci95(right)[1],
                    **means,
                }
            )
    return out


def markdown(summary: list[dict[str, Any]], command: str, result: dict[str, Any]) -> str:
    """The results table, with the command and what was measured."""
    lines = [
        "# Answer format: the short-answer instruction, base and passage-trained adapters",
        "",
        f"`{command}`",
        "",
        f'Instruction: "{ANSWER_INSTRUCTION}" (system message) against none (the model\'s own chat default).',
        f"One adapter per passage trained on the passage alone; training {result['train_s']} s, "
        f"wall {result['wall_s']} s.",
        "",
        "| prompt | model | right answers | answer recall | exact match | F1 | gold log-lik (nats/token) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['prompt']} | {r['model']} | {r['right']}/{r['questions']} | "
            f"{r['answer_recall']:.2f} ± {r['recall_ci95']:.2f} | {r['exact_match']:.2f} | {r['f1']:.2f} | "
            f"{r['loglik']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = command_line("bench.answer_format", argv)
    with tempfile.TemporaryDirectory(prefix="answer-format-") as store:
        result = measure(args, Path(store))
    summary = summary_rows(result["rows"])
    record = {"command": command, "summary": summary, **result}
    write_results(args.out, "answer_format", record, markdown(summary, command.strip(), result))


if __name__ == "__main__":
    main()
