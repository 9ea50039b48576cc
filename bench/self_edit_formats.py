"""Which self-edit format the untrained teacher writes well: list shape, items, and what each teaches the student.

Run (about 45 minutes on one core with the embedded SmolLM2-135M-Instruct as teacher and student):

    python -m bench.self_edit_formats --threads 1 --limit 8 --k 4

For each arm (a format of the paper: ``implications``, ``rewrite``, ``self_qa``; ``+ex``: the prompt shows a
worked example first, ``teacher/prompts.py``) the teacher samples ``--k`` self-edits for each passage of the dev
data (one passage per title, so the passages span titles), through the teacher's own ``propose``. Then:

- **shape**: the share of samples written as two or more lines (the list asked for), the share that parse into
  two or more training items (:mod:`library.self_edit_items`), the mean item count, and the share that copy the
  worked example's made-up names or phrases (Harwick, whale oil, ...) instead of writing about their passage;
- **what it teaches**: every sample and the passage alone are trained as one candidate each, together per
  passage, through the student's own trainer, and scored as the auditor scores τ (the gold answers'
  log-likelihood, :func:`auditor.scoring.score_models`, and answer recall). Gains are paired against the
  passage alone, with 95% intervals over passages;
- **samples per passage**: the gain of the best of the first k samples (best by the same gold log-likelihood, as
  ReST^EM keeps its best), for k = 1 .. ``--k``: what more samples buy the outer loop.

Each passage's samples and scores are appended to ``--out`` as they are made, so an interrupted run resumes.
Results: ``self_edit_formats.md`` and ``.json`` there, with the exact command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from auditor.config import AuditorConfig
from auditor.grading import answer_recall, mean_ci95
from auditor.scoring import score_models
from bench.results_files import command_line, write_results
from library.datasets import QAItem, load_contexts, load_questions
from library.jsonl import append_jsonl, read_jsonl
from library.model_specs import DEFAULT_MODEL
from library.self_edit_items import listed_lines, self_edit_items
from protocol.messages import AnswerQuestions, ApplySelfEdits, Context, SamplingConfig, SelfEdit, TrainConfig, TrainJob
from student.config import StudentConfig
from student.service import Student
from teacher.backend_spec import build_backend
from teacher.config import TeacherConfig
from teacher.proposer import passage_only, propose

ROOT = Path(__file__).resolve().parents[1]
DEV_DATA = ROOT.parent / "shared" / "data" / "squad" / "squad_dev.json"
PASSAGE_ONLY = "passage only"
EXAMPLE_MARKERS = ("Harwick", "Quist", "Gull Point", "whale oil", "18 miles", "maritime museum")
"""The worked example's made-up names and phrases: a sample that uses one copied from the example."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Teacher and student model.")
    parser.add_argument("--data", type=Path, default=DEV_DATA, help="SQuAD-format dev passages with τ.")
    parser.add_argument("--limit", type=int, default=8, help="Passages (one per title).")
    parser.add_argument("--k", type=int, default=4, help="Self-edits sampled per passage and arm.")
    parser.add_argument(
        "--arms", default="implications,implications+ex,rewrite+ex,self_qa+ex", help="Comma-separated FORMAT[+ex]."
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Student learning rate.")
    parser.add_argument("--epochs", type=int, default=2, help="Student epochs.")
    parser.add_argument(
        "--seed", type=int, default=0, help="Student seed (LoRA init, data order); another seed measures reward noise."
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "self_edit_formats", help="Results folder."
    )
    return parser.parse_args(argv)


def parse_arm(arm: str) -> tuple[str, bool]:
    """``implications+ex`` as (format, worked example shown)."""
    fmt, _, example = arm.partition("+")
    if fmt not in ("implications", "rewrite", "self_qa") or example not in ("", "ex"):
        raise SystemExit(f"unknown arm {arm!r}: use implications, rewrite or self_qa, with +ex for a worked example")
    return fmt, example == "ex"


def sample_arms(
    args: argparse.Namespace, contexts: list[Context], arms: list[str], path: Path
) -> dict[str, dict[str, list[SelfEdit]]]:
    """Per arm, per context id: ``--k`` self-edits, read from ``path`` where sampled before, else sampled now."""
    found: dict[str, dict[str, list[SelfEdit]]] = {}
    for row in read_jsonl(path):
        found.setdefault(row["arm"], {})[row["context_id"]] = [SelfEdit.model_validate(e) for e in row["self_edits"]]
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=160)
    backend = None
    for arm in arms:
        have = found.setdefault(arm, {})
        missing = [c for c in contexts if c.context_id not in have]
        if not missing:
            continue
        backend = backend or build_backend(TeacherConfig(model=args.model))
        fmt, example = parse_arm(arm)
        started = time.perf_counter()
        for context, edits in zip(
            missing, propose(backend, missing, args.k, fmt, sampling, "v0", worked_example=example), strict=True
        ):
            have[context.context_id] = edits
            append_jsonl(
                path, {"arm": arm, "context_id": context.context_id, "self_edits": [e.model_dump() for e in edits]}
            )
        print(f"{arm}: {len(missing) * args.k} samples in {time.perf_counter() - started:.0f} s", flush=True)
    return found


def score_passage(
    student: Student, context: Context, questions: list[QAItem], edits: dict[str, list[SelfEdit]], settings: TrainConfig
) -> list[dict[str, Any]]:
    """The passage alone and every sample, trained together, each scored on the passage's questions."""
    named = [(PASSAGE_ONLY, 0, passage_only(context, "v0"))]
    named += [(arm, i, edit) for arm, samples in edits.items() for i, edit in enumerate(samples)]
    jobs = [TrainJob(context=context, self_edit=edit, settings=settings) for _, _, edit in named]
    trained = student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates
    adapters = [c.adapter.adapter_id for c in trained]
    folders = {a: student.store.path(a) for a in adapters}
    try:
        logliks = score_models(student.model, student.tokenizer, [None, *adapters], folders, questions)
        request = AnswerQuestions(
            questions=[q.question for q in questions],
            adapter_ids=[None, *adapters],
            max_new_tokens=AuditorConfig().answer_tokens,
        )
        answers = {r.adapter_id: r.answers for r in student.answer_questions(request).results}
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)

    def recall(model: str | None) -> float:
        return statistics.fmean(answer_recall(a, q.answers) for a, q in zip(answers[model], questions, strict=True))

    rows = [
        {
            "context_id": context.context_id,
            "arm": arm,
            "sample": i,
            "text": edit.text,
            "lines": listed_lines(edit.text),
            "items": len(self_edit_items(edit.text, edit.format)),
            "loglik": statistics.fmean(logliks[adapter].gold),
            "answer_recall": recall(adapter),
        }
        for (arm, i, edit), adapter in zip(named, adapters, strict=True)
    ]
    base = {"loglik": statistics.fmean(logliks[None].gold), "answer_recall": recall(None)}
    return [{**row, "base_loglik": base["loglik"], "base_answer_recall": base["answer_recall"]} for row in rows]


def copies_example(text: str) -> bool:
    """Whether a sample uses a name or phrase of the worked example (case-insensitive)."""
    lowered = text.lower()
    return any(marker.lower() in lowered for marker in EXAMPLE_MARKERS)


def summarise(rows: list[dict[str, Any]], arms: list[str], k: int) -> list[dict[str, Any]]:
    """Per arm: shape shares, paired gains against the passage alone (CI over passages), best-of-k gains."""
    passage = {r["context_id"]: r for r in rows if r["arm"] == PASSAGE_ONLY}
    out = []
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm and r["context_id"] in passage]
        if not mine:
            continue
        contexts = list(dict.fromkeys(r["context_id"] for r in mine))
        by_context = {c: sorted((r for r in mine if r["context_id"] == c), key=lambda r: r["sample"]) for c in contexts}
        summary: dict[str, Any] = {
            "arm": arm,
            "passages": len(contexts),
            "samples": len(mine),
            "share_listed": statistics.fmean(r["lines"] >= 2 for r in mine),
            "share_two_items": statistics.fmean(r["items"] >= 2 for r in mine),
            "mean_items": statistics.fmean(r["items"] for r in mine),
            "share_copies_example": statistics.fmean(copies_example(r["text"]) for r in mine),
        }
        for metric in ("loglik", "answer_recall"):
            gains = [statistics.fmean(r[metric] - passage[c][metric] for r in by_context[c]) for c in contexts]
            summary[f"gain_{metric}"] = mean_ci95(gains)
            summary[f"beats_passage_{metric}"] = statistics.fmean(
                r[metric] > passage[r["context_id"]][metric] for r in mine
            )
        summary["best_of_k_loglik"] = [
            mean_ci95([max(r["loglik"] for r in by_context[c][:n]) - passage[c]["loglik"] for c in contexts])
            for n in range(1, k + 1)
        ]
        out.append(summary)
    return out


def reference_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The passage alone against no adaptation: the bar every arm is measured from."""
    passage = [r for r in rows if r["arm"] == PASSAGE_ONLY]
    return {
        metric: mean_ci95([r[metric] - r[f"base_{metric}"] for r in passage]) for metric in ("loglik", "answer_recall")
    }


def markdown(summary: list[dict[str, Any]], reference: dict[str, Any], command: str, k: int, wall_s: float) -> str:
    """The results tables, with the command."""
    pm = "±"
    lines = [
        "# Self-edit formats of the untrained teacher: shape, and gain over the passage alone",
        "",
        f"`{command}`",
        "",
        f"Passage alone vs no adaptation: gold log-lik {reference['loglik'][0]:+.3f} {pm} {reference['loglik'][1]:.3f} "
        f"nats/token, answer recall {reference['answer_recall'][0]:+.3f} {pm} {reference['answer_recall'][1]:.3f}.",
        f"Gains below are paired against the passage alone, 95% intervals over passages. Wall time {wall_s:.0f} s.",
        "",
        "| arm | passages × samples | listed (≥2 lines) | ≥2 items | mean items | copies example | Δ gold log-lik | "
        "samples beating passage (log-lik) | Δ answer recall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['arm']} | {s['passages']} × {s['samples'] // s['passages']} | {s['share_listed']:.0%} | "
            f"{s['share_two_items']:.0%} | {s['mean_items']:.1f} | {s['share_copies_example']:.0%} | "
            f"{s['gain_loglik'][0]:+.3f} {pm} {s['gain_loglik'][1]:.3f} | {s['beats_passage_loglik']:.0%} | "
            f"{s['gain_answer_recall'][0]:+.3f} {pm} {s['gain_answer_recall'][1]:.3f} |"
        )
    lines += ["", "Best of the first k samples (by gold log-lik) against the passage alone:", ""]
    lines += ["| arm | " + " | ".join(f"k={n}" for n in range(1, k + 1)) + " |", "|---|" + "---:|" * k]
    for s in summary:
        cells = [f"{mean:+.3f} {pm} {half:.3f}" for mean, half in s["best_of_k_loglik"]]
        lines.append(f"| {s['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Sample, train, score and write the tables; resumes from ``--out``."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    arms = args.arms.split(",")
    for arm in arms:
        parse_arm(arm)
    command = command_line("bench.self_edit_formats", argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    contexts = load_contexts(args.data, limit=args.limit, per_title=1)
    questions = load_questions(args.data, limit=args.limit, per_title=1)
    samples = sample_arms(args, contexts, arms, args.out / "self_edits.jsonl")
    records_path = args.out / "records.jsonl"
    rows = [r for r in read_jsonl(records_path) if r["arm"] in (PASSAGE_ONLY, *arms)]
    done = {r["context_id"] for r in rows if r["arm"] == PASSAGE_ONLY}
    settings = TrainConfig(learning_rate=args.learning_rate, epochs=args.epochs, seed=args.seed)
    student = Student(StudentConfig(model=args.model, store=args.out / "store", train=settings))
    for n, context in enumerate(contexts, 1):
        if context.context_id in done:
            continue
        edits = {arm: samples[arm][context.context_id] for arm in arms}
        passage_rows = score_passage(student, context, questions[context.context_id], edits, settings)
        append_jsonl(records_path, *passage_rows)
        rows += passage_rows
        print(
            f"passage {n}/{len(contexts)} ({context.title}) scored at {time.perf_counter() - started:.0f} s", flush=True
        )
    summary = summarise(rows, arms, args.k)
    reference = reference_rows(rows)
    wall_s = time.perf_counter() - started
    record = {"command": command, "summary": summary, "reference": reference, "wall_s": wall_s, "arms": arms}
    write_results(args.out, "self_edit_formats", record, markdown(summary, reference, command, args.k, wall_s))
    (args.out / "config.json").write_text(json.dumps({**vars(args), "data": str(args.data), "out": str(args.out)}))


if __name__ == "__main__":
    main()
