"""``seal bench knowledge``: the paper's knowledge-incorporation table on held-out passages.

Run: ``seal bench knowledge --data squad_train100_qwen7b_selfedits.json --limit 50 --teacher-run runs/restem``

Conditions, each scored closed-book on every passage's questions: no adaptation;
the passage only; passage + self-edits from the untrained teacher (v0); passage +
recorded self-edits (the file's ``completions``, when it has them); passage +
self-edits from each teacher version of a ``seal train-teacher`` run. The student's
training settings and every seed are the same for all conditions.

Two modes: ``single`` trains a fresh adapter per passage and condition (every
condition of a passage trained together, one candidate each), ``cpt`` (continued
pretraining) one adapter per condition on all passages at once. Self-edits and
per-question records are appended as they are made, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from apps.cli_config import ConfigError
from apps.knowledge_config import NO_ADAPTATION, PASSAGE_ONLY, RECORDED, KnowledgeBenchConfig
from apps.knowledge_report import write_report
from auditor.grading import answer_recall, exact_match, f1_score
from auditor.scoring import score_models
from library.datasets import QAItem, load_contexts, load_questions, load_recorded_self_edits
from library.jsonl import append_jsonl, read_jsonl, write_jsonl
from library.llm_judge import LLMJudge
from protocol.messages import (
    AnswerQuestions,
    ApplySelfEdits,
    Context,
    SelfEdit,
    TrainJob,
)
from student.config import StudentConfig
from student.service import Student
from teacher.proposer import passage_only, self_edit_id
from teacher.versions import BASE_VERSION, TeacherVersion, VersionBook, serve


def run_knowledge_bench(config: KnowledgeBenchConfig, console: Console | None = None) -> Path:
    """Collect self-edits, train and score every condition, write table, JSON and plot; returns the table."""
    console = console or Console()
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    _check_resumable(config)
    (config.out / "config.json").write_text(config.model_dump_json(indent=1))
    contexts = load_contexts(config.data, config.limit, config.offset)
    questions = load_questions(config.data, config.limit, config.offset)
    edits = collect_self_edits(config, contexts)
    conditions = [NO_ADAPTATION, *edits]
    console.print(f"{len(contexts)} passages, conditions: {', '.join(conditions)}")
    student = Student(
        StudentConfig(model=config.model, device=config.device, store=config.out / "store", train=config.train)
    )
    judge = _build_judge(config)
    score = _score_single if config.mode == "single" else _score_cpt
    records = score(student, config, contexts, questions, edits, judge)
    table = write_report(config.out, conditions, records, config.model_dump(mode="json"), time.perf_counter() - started)
    console.print(table.read_text())
    return table


# --------------------------------------------------------------------------- self-edits per condition


def collect_self_edits(config: KnowledgeBenchConfig, contexts: list[Context]) -> dict[str, dict[str, SelfEdit]]:
    """Per condition (in table order), per context id: the self-edit it trains on; kept in ``self_edits.jsonl``."""
    path = config.out / "self_edits.jsonl"
    done: dict[str, dict[str, SelfEdit]] = {}
    for row in read_jsonl(path):  # a torn last line is left out here, and cut off by the next append
        done.setdefault(row["condition"], {})[row["context_id"]] = SelfEdit.model_validate(row["self_edit"])
    sources = [(PASSAGE_ONLY, lambda missing: [passage_only(c, "none") for c in missing])]
    shared: dict[str, object] = {}  # one teacher model for every version: each serves its adapter in turn
    book, versions = teacher_versions(config)
    for version in versions:
        sources.append((f"teacher {version.version}", _teacher_source(config, version, book, shared)))
    recorded = load_recorded_self_edits(config.data, config.limit, config.offset)
    if recorded:
        sources.insert(2, (RECORDED, lambda missing: [_recorded(c, recorded, config) for c in missing]))
    out: dict[str, dict[str, SelfEdit]] = {}
    with _progress() as progress:
        for condition, make in sources:
            have = done.get(condition, {})
            missing = [c for c in contexts if c.context_id not in have]
            task = progress.add_task(f"self-edits: {condition}", total=len(contexts), completed=len(have))
            for start in range(0, len(missing), 8):
                chunk = missing[start : start + 8]
                rows = []
                for context, edit in zip(chunk, make(chunk), strict=True):
                    have[context.context_id] = edit
                    row = {"condition": condition, "context_id": context.context_id, "self_edit": edit.model_dump()}
                    rows.append(row)
                append_jsonl(path, *rows)
                progress.advance(task, len(chunk))
            out[condition] = have
    return out


def teacher_versions(config: KnowledgeBenchConfig) -> tuple[VersionBook | None, list[TeacherVersion]]:
    """The untrained teacher (v0), then each version of ``config.teacher_run``, and that run's version book."""
    if config.teacher_run is None:
        return None, [BASE_VERSION]
    if not (config.teacher_run / "teacher" / "versions.json").exists():
        raise FileNotFoundError(f"{config.teacher_run} has no teacher/versions.json: is it a `seal train-teacher` run?")
    book = VersionBook(config.teacher_run)
    versions = [book.versions[0]]
    for version in book.versions[1:]:  # a round that kept nothing carried the teacher over: nothing new to score
        if version.artifact_sha256 != versions[-1].artifact_sha256:
            versions.append(version)
    for version in versions:
        _check_teacher_base(config, book, version)
    return book, versions


def _check_teacher_base(config: KnowledgeBenchConfig, book: VersionBook, version: TeacherVersion) -> None:
    """A LoRA version must be served on the model it was trained on: say so, not fail deep in peft."""
    folder = book.artifact_path(version) if version.kind == "lora" else None
    if folder is None:
        return
    trained_on = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    teacher = config.teacher or config.model
    if trained_on != teacher:
        raise ConfigError(f"teacher {version.version} was trained on {trained_on!r}, not {teacher!r}: pass --teacher")


def _teacher_source(
    config: KnowledgeBenchConfig, version: TeacherVersion, book: VersionBook | None, shared: dict[str, object]
):
    """A function from contexts to one self-edit each, sampled by the teacher at ``version``."""
    from teacher.backend_spec import build_backend
    from teacher.config import TeacherConfig
    from teacher.proposer import propose

    def make(contexts: list[Context]) -> list[SelfEdit]:
        if "backend" not in shared:  # built on first use: a finished condition never loads a model
            shared["backend"] = build_backend(TeacherConfig(model=config.teacher or config.model, device=config.device))
        backend = shared["backend"]
        if book is not None:
            serve(backend, version, book)
        bank = book.bank(version) if book is not None else None
        rows = propose(
            backend,
            contexts,
            1,
            config.format,
            config.sampling,
            version.version,
            bank,
            worked_example=config.worked_example,
        )
        return [row[0] if row else passage_only(c, version.version) for c, row in zip(contexts, rows, strict=True)]

    return make


def _recorded(context: Context, recorded: dict, config: KnowledgeBenchConfig) -> SelfEdit:
    found = recorded.get(context.context_id)
    if found is None:  # a passage the recorder skipped: the passage alone, so conditions stay comparable
        return passage_only(context, "recorded")
    text = "\n".join(found.completions[: config.recorded_completions])
    return SelfEdit(
        self_edit_id=self_edit_id(context.context_id, "recorded", text, 0),
        context_id=context.context_id,
        format="recorded",
        text=text,
        prompt=found.prompt or "",
        teacher_model="recorded",
        teacher_version="recorded",
    )


# --------------------------------------------------------------------------- training and scoring


def _score_single(
    student: Student,
    config: KnowledgeBenchConfig,
    contexts: list[Context],
    questions: dict[str, list[QAItem]],
    edits: dict[str, dict[str, SelfEdit]],
    judge: LLMJudge | None = None,
) -> list[dict]:
    """A fresh adapter per passage and condition; per-question records, resumed from ``records.jsonl``."""
    path = config.out / "records.jsonl"
    records = _complete_groups(read_jsonl(path), questions) if path.exists() else []
    _grade_ungraded(records, judge)
    write_jsonl(path, records)  # drop what an interrupted write left half done: it is scored again
    done = {(r["condition"], r["context_id"]) for r in records}  # a condition added later is scored then
    with _progress() as progress:
        task = progress.add_task("passages", total=len(contexts))
        for context in contexts:
            cid = context.context_id
            jobs = {name: TrainJob(context=context, self_edit=edit[cid]) for name, edit in edits.items()}
            jobs = {name: job for name, job in jobs.items() if (name, cid) not in done}
            with_base = (NO_ADAPTATION, cid) not in done
            if jobs or with_base:
                rows = _train_and_score(student, config, jobs, questions[cid], cid, with_base, judge)
                append_jsonl(path, *rows)
                records += rows
            progress.advance(task)
    return records


def _score_cpt(
    student: Student,
    config: KnowledgeBenchConfig,
    contexts: list[Context],
    questions: dict[str, list[QAItem]],
    edits: dict[str, dict[str, SelfEdit]],
    judge: LLMJudge | None = None,
) -> list[dict]:
    """One adapter per condition on every passage and its self-edits together; all questions scored."""
    path = config.out / "records-cpt.jsonl"
    if path.exists():
        records = read_jsonl(path)
        _grade_ungraded(records, judge)
        write_jsonl(path, records)
        return records
    corpus = Context(context_id="cpt", title="all passages", text=" ".join(c.text for c in contexts))
    settings = config.train.model_copy(update={"include_context": False})  # passages become lines below
    jobs = {}
    for name, by_id in edits.items():
        lines = [line for c in contexts for line in (" ".join(c.text.split()), by_id[c.context_id].text) if line]
        edit = by_id[contexts[0].context_id].model_copy(update={"text": "\n".join(lines), "context_id": "cpt"})
        jobs[name] = TrainJob(context=corpus, self_edit=edit, settings=settings)
    tau = [q for c in contexts for q in questions[c.context_id]]
    owners = [c.context_id for c in contexts for _ in questions[c.context_id]]
    rows = _train_and_score(student, config, jobs, tau, owners, judge=judge)
    write_jsonl(path, rows)
    return rows


def _train_and_score(
    student: Student,
    config: KnowledgeBenchConfig,
    jobs: dict[str, TrainJob],
    tau: list[QAItem],
    owners: str | list[str],
    with_base: bool = True,
    judge: LLMJudge | None = None,
) -> list[dict]:
    """Train every condition's job together, answer and score τ with each; one record per (condition, question)."""
    adapters = {}
    if jobs:
        trained = student.apply_self_edits(ApplySelfEdits(jobs=list(jobs.values())))
        adapters = {name: c.adapter.adapter_id for name, c in zip(jobs, trained.candidates, strict=True)}
    models: dict[str, str | None] = ({NO_ADAPTATION: None} if with_base else {}) | adapters
    with _stored(student, list(adapters.values())) as folders:
        request = AnswerQuestions(
            questions=[q.question for q in tau], adapter_ids=list(models.values()), max_new_tokens=config.answer_tokens
        )
        answers = {r.adapter_id: r.answers for r in student.answer_questions(request).results}
        logliks = _gold_logliks(student, folders, tau, list(models.values()))
    owner_of = owners if isinstance(owners, list) else [owners] * len(tau)
    rows = [
        {
            "condition": name,
            "context_id": owner,
            "question": q.question,
            "gold": q.answers,
            "answer": answers[adapter][i],
            "exact_match": exact_match(answers[adapter][i], q.answers),
            "f1": f1_score(answers[adapter][i], q.answers),
            "answer_recall": answer_recall(answers[adapter][i], q.answers),
            "loglik": logliks[adapter][i],
        }
        for name, adapter in models.items()
        for i, (q, owner) in enumerate(zip(tau, owner_of, strict=True))
    ]
    if judge is not None:
        judgements = judge.grade([(r["question"], r["gold"], r["answer"]) for r in rows])
        for row, judgement in zip(rows, judgements, strict=True):
            row["judge"], row["judge_reply"] = judgement.correct, judgement.reply
    return rows


def _grade_ungraded(records: list[dict], judge: LLMJudge | None) -> None:
    """Grade, in place, the records a resumed run's judge has not graded: those made before ``--judge`` was
    given, and those whose judge call failed (after the backend's retries). A refusal or a reply that is
    neither yes nor no is the judge's answer at temperature 0, and is kept."""
    if judge is None:
        return
    failed = [r for r in records if r.get("judge", False) is None and r.get("judge_reply", "").startswith("error:")]
    todo = [r for r in records if "judge" not in r] + failed
    if todo:
        judgements = judge.grade([(r["question"], r["gold"], r["answer"]) for r in todo])
        for record, judgement in zip(todo, judgements, strict=True):
            record["judge"], record["judge_reply"] = judgement.correct, judgement.reply


def _build_judge(config: KnowledgeBenchConfig) -> LLMJudge | None:
    """The configured LLM judge, checked (key, server, model) before any work; None without ``--judge``."""
    if config.judge is None:
        return None
    from teacher.backend_spec import build_backend
    from teacher.config import TeacherConfig

    return LLMJudge(build_backend(TeacherConfig(model=config.judge, base_url=config.judge_base_url)))


def _gold_logliks(
    student: Student, folders: dict[str, Path], tau: list[QAItem], models: list[str | None]
) -> dict[str | None, list[float]]:
    """Each model's best per-token log-likelihood over each question's gold answers, in one batched pass.

    The auditor's own scoring (:func:`auditor.scoring.score_models`), on the student's copy of the base model.
    """
    scores = score_models(student.model, student.tokenizer, models, folders, tau)
    return {model: scores[model].gold for model in models}


@contextmanager
def _stored(student: Student, adapter_ids: list[str]) -> Iterator[dict[str, Path]]:
    """The adapters' store folders, deleted afterwards: a bench trains hundreds, and keeps only their scores."""
    folders = {a: student.store.path(a) for a in adapter_ids}
    try:
        yield folders
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


# --------------------------------------------------------------------------- resuming


RESUME_FIELDS = (
    "data",
    "model",
    "teacher",
    "format",
    "worked_example",
    "sampling",
    "recorded_completions",
    "mode",
    "train",
)
"""Settings a resumed run must share with the records already made (--limit, --offset, --teacher-run may grow)."""


def _check_resumable(config: KnowledgeBenchConfig) -> None:
    """Refuse to mix records made with other settings into one table."""
    saved = config.out / "config.json"
    if not saved.exists():
        return
    before = json.loads(saved.read_text())
    now = config.model_dump(mode="json")
    changed = [name for name in RESUME_FIELDS if before.get(name) != now[name]]
    if before.get("judge") not in (None, now["judge"]):  # a judge may join later, not change or leave
        changed.append("judge")
    if changed:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in changed)
        raise ConfigError(f"{config.out} holds results made with other {flags}: use a new --out, or the same settings")


def _complete_groups(records: list[dict], questions: dict[str, list[QAItem]]) -> list[dict]:
    """Only the (condition, passage) groups that have a record for every one of the passage's questions."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        counts[(r["condition"], r["context_id"])] = counts.get((r["condition"], r["context_id"]), 0) + 1
    return [
        r
        for r in records
        if r["context_id"] not in questions
        or counts[(r["condition"], r["context_id"])] == len(questions[r["context_id"]])
    ]
