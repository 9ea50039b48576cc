"""What the student's training settings cost in general knowledge: facts of the answer probes lost, against τ gained.

Run (about 10 minutes on 2 CPU cores with the embedded SmolLM2-135M-Instruct):

    python -m bench.probe_loss --threads 1                       # the paper's settings against the default
    python -m bench.probe_loss --settings 1e-3x10,3e-4x3,1e-4x10 --limit 3

For every setting (``LRxEPOCHS``, then optionally ``aN`` for N anchors: the base model's own answers to general
questions, ``student.anchors``, with ``k`` after it to train them by KL to the base model's own next-token
distributions; ``rN`` for LoRA rank N with α = 2N; ``-attn`` for the attention projections
only; the rest are the student's defaults; e.g. ``1e-3x10a16r8-attn``) one adapter per passage
is trained on the passage alone, through the student's own code. Then the base model and each adapter
answer the auditor's built-in ``answer`` probes (facts the base model answers right) as the auditor asks
them, and the passage's τ; the auditor's own functions count the facts lost (``auditor.safety``), the gold
answers' likelihood gain and the right answers. A candidate passes the probes when it loses at most
``--probe-answers-may-lose`` of them (the auditor's default: 1); the table shows both 0 and 1.
Results: ``bench/results/probe_loss/probe_loss.md`` and ``.json``, with the exact command.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from auditor.config import AuditorConfig
from auditor.grading import answer_recall
from auditor.safety import Probe, gives_answer, load_probes, lost_facts
from auditor.scoring import score_models
from bench.answer_format import passage_only
from bench.results_files import command_line, write_results
from library.datasets import DEMO_DOCUMENTS, QAItem, load_contexts, load_questions
from library.model_specs import DEFAULT_MODEL
from protocol.messages import AnswerQuestions, ApplySelfEdits, TrainConfig, TrainJob
from student.config import StudentConfig
from student.service import Student

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Student model.")
    parser.add_argument("--data", type=Path, default=DEMO_DOCUMENTS, help="SQuAD-format passages with τ.")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N passages.")
    parser.add_argument(
        "--settings",
        default="1e-3x10,3e-4x3",
        help="Comma-separated LRxEPOCHS[aANCHORS[k]][rRANK][-attn] (default: the paper's, seal's).",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "probe_loss", help="Results folder.")
    return parser.parse_args(argv)


_SETTING = re.compile(
    r"^(?P<rate>[0-9.e+-]+?)x(?P<epochs>\d+)(?:a(?P<anchors>\d+)(?P<kl>k)?)?(?:r(?P<rank>\d+))?(?P<attn>-attn)?$"
)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
"""The attention projections of the Llama-family default model, for ``-attn`` settings."""


def parse_setting(spec: str) -> TrainConfig:
    """``1e-3x10`` (learning rate x epochs), with ``a32`` (32 anchors; ``a32k``: trained by KL), ``r8``, ``-attn``."""
    found = _SETTING.match(spec)
    if found is None:
        raise SystemExit(f"unknown setting {spec!r}: write LRxEPOCHS[aANCHORS[k]][rRANK][-attn], e.g. 1e-3x10a16kr8")
    settings = TrainConfig(
        learning_rate=float(found["rate"]),
        epochs=int(found["epochs"]),
        anchors=int(found["anchors"] or 0),
        anchor_loss="kl" if found["kl"] else "tokens",
    )
    if found["rank"]:
        settings = settings.model_copy(update={"rank": int(found["rank"]), "alpha": 2.0 * int(found["rank"])})
    if found["attn"]:
        settings = settings.model_copy(update={"target_modules": ATTENTION})
    return settings


def measure(args: argparse.Namespace, store: Path, setting_done: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Per setting and passage: facts lost, τ likelihood gain and right answers, base against adapter.

    ``setting_done`` is given the results so far after each setting (a long run's finished settings are kept).
    """
    student = Student(StudentConfig(model=args.model, store=store))
    auditor = AuditorConfig()  # its probe and answer lengths
    probes = load_probes(None)  # all of them, asked together as the auditor asks them
    prompts = [p.prompt for p in probes]
    contexts = load_contexts(args.data, limit=args.limit)
    tau = load_questions(args.data, limit=args.limit)
    base_request = AnswerQuestions(questions=prompts, adapter_ids=[None], max_new_tokens=auditor.probe_tokens)
    base_probes = student.answer_questions(base_request).results[0].answers
    facts = [p for p in probes if p.expect == "answer"]
    known = [p for p, a in zip(probes, base_probes, strict=True) if p in facts and gives_answer(a, p.answers)]
    rows = []
    for spec in args.settings.split(","):
        settings = parse_setting(spec)
        started = time.perf_counter()
        jobs = [TrainJob(context=c, self_edit=passage_only(c.context_id), settings=settings) for c in contexts]
        trained = student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates
        for context, candidate in zip(contexts, trained, strict=True):
            measured = candidate_row(
                student, auditor, probes, base_probes, tau[context.context_id], candidate.adapter.adapter_id
            )
            rows.append({"setting": spec, "context_id": context.context_id, "title": context.title, **measured})
        print(f"{spec}: {len(contexts)} adapters in {time.perf_counter() - started:.0f} s", flush=True)
        setting_done({"facts_known": len(known), "facts": len(facts), "rows": rows})
    return {"facts_known": len(known), "facts": len(facts), "rows": rows}


def candidate_row(
    student: Student,
    auditor: AuditorConfig,
    probes: list[Probe],
    before: list[str],
    questions: list[QAItem],
    adapter: str,
) -> dict[str, Any]:
    """One adapter against the base: the known facts it lost, its τ likelihood gain, right answers of both."""
    prompts = [p.prompt for p in probes]
    probe_request = AnswerQuestions(questions=prompts, adapter_ids=[adapter], max_new_tokens=auditor.probe_tokens)
    after = student.answer_questions(probe_request).results[0].answers
    lost = [p.prompt for p in lost_facts(probes, before, after)]  # as the auditor counts them
    asked = [q.question for q in questions]
    tau_request = AnswerQuestions(questions=asked, adapter_ids=[None, adapter], max_new_tokens=auditor.answer_tokens)
    answers = {r.adapter_id: r.answers for r in student.answer_questions(tau_request).results}
    logliks = score_models(
        student.model, student.tokenizer, [None, adapter], {adapter: student.store.path(adapter)}, questions
    )
    gains = [c - b for b, c in zip(logliks[None].gold, logliks[adapter].gold, strict=True)]
    right = {
        m: sum(answer_recall(a, q.answers) for a, q in zip(given, questions, strict=True))
        for m, given in answers.items()
    }
    return {
        "facts_lost": lost,
        "probe_answers": after,
        "gain_loglik": sum(gains) / len(gains),
        "right_base": right[None],
        "right_adapter": right[adapter],
        "questions": len(questions),
    }


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per setting: the facts lost, how many candidates the probes pass at 0 and 1 allowed, τ's gain."""
    out = []
    for spec in dict.fromkeys(r["setting"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["setting"] == spec]
        lost = [len(r["facts_lost"]) for r in rows]
        out.append(
            {
                "setting": spec,
                "candidates": len(rows),
                "facts_lost_mean": sum(lost) / len(lost),
                "facts_lost": lost,
                "pass_0": sum(n == 0 for n in lost),
                "pass_1": sum(n <= 1 for n in lost),
                "gain_loglik_mean": sum(r["gain_loglik"] for r in rows) / len(rows),
                "gain_loglik_min": min(r["gain_loglik"] for r in rows),
                "right_base": sum(r["right_base"] for r in rows),
                "right_adapter": sum(r["right_adapter"] for r in rows),
                "questions": sum(r["questions"] for r in rows),
            }
        )
    return out


def markdown(summary: list[dict[str, Any]], command: str, result: dict[str, Any]) -> str:
    """The results table, with the command and what was measured."""
    lines = [
        "# Probe loss: general knowledge lost against τ gained, per training setting",
        "",
        f"`{command}`",
        "",
        f"One adapter per passage, trained on the passage alone; the base model answers {result['facts_known']} "
        f"of the {result['facts']} answer probes right. Setting: learning rate x epochs (rank, α: the student's).",
        "",
        "| setting | candidates | facts lost (mean; each) | pass, 0 allowed | pass, 1 allowed | τ gain nats/token "
        "(mean; min) | right answers base → adapter |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['setting']} | {r['candidates']} | {r['facts_lost_mean']:.1f}; {r['facts_lost']} | {r['pass_0']} | "
            f"{r['pass_1']} | {r['gain_loglik_mean']:.2f}; {r['gain_loglik_min']:.2f} | "
            f"{r['right_base']:.0f}/{r['questions']} → {r['right_adapter']:.0f}/{r['questions']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and write its table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = command_line("bench.probe_loss", argv)
    started = time.perf_counter()

    def write(result: dict[str, Any]) -> None:
        result["wall_s"] = round(time.perf_counter() - started, 1)
        summary = summary_rows(result)
        record = {"command": command, "summary": summary, **result}
        write_results(args.out, "probe_loss", record, markdown(summary, command.strip(), result))

    with tempfile.TemporaryDirectory(prefix="probe-loss-") as store:
        measure(args, Path(store), write)


if __name__ == "__main__":
    main()
