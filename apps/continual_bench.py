"""``seal bench continual``: passages adapted one after another, three arms, what each forgets.

Run: ``seal bench continual --limit 8 --threads 1`` (the demo documents with their own questions as τ).

Arms, each with the same self-edits (sampled once per passage), the same training settings and seeds:
``naive sequential`` (the auditor's thresholds opened, the facts of its answer probes included, so each
passage's candidate is accepted and stacked: no gate; only its text rules and refusal probes could still veto one),
``seal gate`` (the auditor's thresholds, earlier passages replayed) and ``seal gate + rehearsal`` (the gate,
with earlier accepted self-edits mixed into each candidate's training). Each arm runs the product's own code
path in one process: a :class:`student.service.Student` and an :class:`auditor.service.Auditor` behind
in-process links, the teacher's :func:`teacher.loop.run_pass`, and before each next passage ``seal adapt``'s
promotion step (:func:`apps.sequential_promote.promote_pending`, with the CLI's role and the run's key).

After each step t (passage t judged, its update promoted if accepted), the served stack answers the questions
of passages 1..t, graded by answer recall: a row of the forgetting matrix, and the mean over all seen
questions with a 95% interval. Each arm's folder is a run folder; ``steps.jsonl`` holds the measurements, so
a rerun resumes (finished passages are not adapted again, measured steps not measured again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from apps.cli_config import ConfigError
from apps.continual_config import ARMS, NAIVE, REHEARSAL, ContinualBenchConfig
from apps.continual_report import arm_slug, write_report
from apps.sequential_promote import promote_pending
from auditor.config import AuditorConfig
from auditor.grading import answer_recall
from auditor.service import Auditor
from library.datasets import QAItem, load_contexts, load_questions
from library.jsonl import append_jsonl, read_jsonl
from protocol.clients import StudentClient, auditor_in_process, student_in_process
from protocol.messages import Context, SelfEdit
from protocol.signing import create_signing_key, load_signing_key, load_verify_key
from student.config import StudentConfig
from student.service import Student
from teacher.backend_spec import build_backend
from teacher.config import TeacherConfig
from teacher.loop import run_pass
from teacher.proposer import proposer_for

STEPS_FILE = "steps.jsonl"


def run_continual_bench(config: ContinualBenchConfig, command: str, console: Console | None = None) -> Path:
    """Sample the self-edits once, run the three arms, write the report; returns the report's path."""
    console = console or Console()
    started = time.perf_counter()
    _check_resumable(config)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "config.json").write_text(config.model_dump_json(indent=1))
    contexts = load_contexts(config.data, config.limit)
    questions = load_questions(config.data, config.limit)
    edits = collect_self_edits(config, contexts)
    for arm in ARMS:
        console.print(f"[bold]{arm}[/]: {len(contexts)} passages")
        run_arm(config, arm, contexts, questions, lambda context: edits[context.context_id])
    report = write_report(config, contexts, read_jsonl(config.out / STEPS_FILE), command, time.perf_counter() - started)
    console.print(report.read_text())
    return report


def _check_resumable(config: ContinualBenchConfig) -> None:
    """Refuse to resume a run made with other settings (its arms' records would be mixed into one report)."""
    saved = config.out / "config.json"
    if not saved.exists():
        return
    before, now = json.loads(saved.read_text()), config.model_dump(mode="json")
    changed = [name for name in now if before.get(name) != now[name]]
    if changed:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in changed)
        raise ConfigError(f"{config.out} holds results made with other {flags}: use a new --out, or the same settings")


def collect_self_edits(config: ContinualBenchConfig, contexts: list[Context]) -> dict[str, list[SelfEdit]]:
    """Each passage's ``k`` self-edits from the teacher, sampled once and kept in ``self_edits.jsonl``."""
    path = config.out / "self_edits.jsonl"
    done = {r["context_id"]: [SelfEdit.model_validate(e) for e in r["self_edits"]] for r in read_jsonl(path)}
    missing = [c for c in contexts if c.context_id not in done]
    if missing:
        teacher = TeacherConfig(
            model=config.teacher or config.model, device=config.device, dtype=config.dtype, k=config.k,
            sampling=config.sampling, run_dir=config.out,
        )  # fmt: skip
        propose = proposer_for(build_backend(teacher), teacher, teacher.version)
        for context in missing:
            done[context.context_id] = propose(context)
            append_jsonl(
                path,
                {"context_id": context.context_id, "self_edits": [e.model_dump() for e in done[context.context_id]]},
            )
    return done


def run_arm(
    config: ContinualBenchConfig,
    arm: str,
    contexts: list[Context],
    questions: dict[str, list[QAItem]],
    propose: Callable[[Context], list[SelfEdit]],
) -> None:
    """One arm: the passages in order through the teacher's pass, promoted and measured between passages."""
    run_dir = config.out / arm_slug(arm)
    keys = run_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    create_signing_key(keys)
    student = Student(
        StudentConfig(model=config.model, device=config.device, dtype=config.dtype, store=run_dir / "store",
                      train=config.train),
        load_verify_key(keys),
    )  # fmt: skip
    auditor = None
    try:
        auditor = Auditor(_auditor_config(config, arm, run_dir), student_in_process(student.handle, "auditor"),
                          load_signing_key(keys))  # fmt: skip
        cli, asker = student_in_process(student.handle, "cli"), student_in_process(student.handle, "auditor")

        def between(done: list[str]) -> None:
            promote_pending(cli, run_dir, keys)
            _measure(config, arm, contexts[: len(done)], questions, cli.describe_served().stack, asker)

        rehearsal = (config.rehearsal, config.rehearsal_seed) if arm == REHEARSAL else (0, 0)
        teacher, judge = student_in_process(student.handle), auditor_in_process(auditor.handle)
        run_pass(contexts, propose, teacher, judge, run_dir, rehearsal=rehearsal, before_context=between)
        between([c.context_id for c in contexts])  # the last passage's step
    finally:
        if auditor is not None:
            auditor.close()  # its ledger's writer lock, so a rerun in this process can open it again
        student.close()


def _auditor_config(config: ContinualBenchConfig, arm: str, run_dir: Path) -> AuditorConfig:
    """The arm's auditor: τ from the passages' own questions; the naive arm's thresholds let everything pass."""
    gate: dict[str, Any] = {
        "min_gain": config.min_gain,
        "max_retention_drop": config.max_retention_drop,
        "max_earlier_drop": config.max_earlier_drop,
        "probe_answers_may_lose": config.probe_answers_may_lose,
    }
    if arm == NAIVE:  # forgetting is what this arm measures: no fact it loses vetoes it
        gate = {"min_gain": -1e9, "max_retention_drop": 1e9, "max_earlier_drop": 1.0, "probe_answers_may_lose": 10**6}
    return AuditorConfig(
        model=config.model, device=config.device, dtype=config.dtype, data=config.data, limit=config.limit,
        store=run_dir / "store", ledger=run_dir / "ledger.jsonl", metric=config.metric,
        answer_tokens=config.answer_tokens, **gate,
    )  # fmt: skip


def _measure(
    config: ContinualBenchConfig,
    arm: str,
    seen: list[Context],
    questions: dict[str, list[QAItem]],
    served: list[str],
    asker: StudentClient,
) -> None:
    """After step ``len(seen)``: the served stack's right answers on every seen passage, one record each."""
    step = len(seen)
    path = config.out / STEPS_FILE
    if step == 0 or any(r["arm"] == arm and r["step"] == step for r in read_jsonl(path)):
        return
    asked = [(c, q) for c in seen for q in questions[c.context_id]]
    reply = asker.answer_questions([q.question for _, q in asked], [None], config.answer_tokens, stack=served)
    right: dict[str, list[int]] = {c.context_id: [] for c in seen}
    for (context, item), answer in zip(asked, reply.results[0].answers, strict=True):
        right[context.context_id].append(int(answer_recall(answer, item.answers)))
    rows = [
        {"arm": arm, "step": step, "context_id": c.context_id, "right": right[c.context_id], "stack": len(served)}
        for c in seen
    ]
    append_jsonl(path, *rows)
