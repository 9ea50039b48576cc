"""``seal adapt PATH...``: a team's documents adapted passage by passage, τ written and kept by the auditor.

Run: ``seal adapt docs/ --run-dir runs/handbook`` (rerun on the same folder after the documents change).

The documents are split into passages here (the teacher's contexts, written to ``contexts.json`` in the run
folder, without questions) and again by the auditor, which reads the same files itself and writes τ; the
three roles then run as in ``seal demo`` (:func:`apps.demo.run_demo`). A rerun skips passages already
judged (their content ids are in ``results.jsonl``), so an interrupted run resumes and a changed document's
new passages are the only ones adapted; the auditor records the change in its ledger. The end is a
report per passage (:mod:`apps.adapt_report`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from apps.adapt_config import AdaptConfig
from apps.adapt_report import write_report
from apps.cli_config import STUDENT_TRAINING, TEACHER_WRITING
from apps.demo import LaunchConfig, run_demo
from auditor.document_tau import DocumentTau, pair_writer, write_tau
from auditor.model_question_writer import PairWriter
from auditor.tau_config import DocumentTauConfig
from library.api_models import APIModelConfig
from library.datasets import DatasetError
from library.documents import token_counter
from library.models import resolve_model

WRITTEN_PAIRS = "written_pairs.jsonl"
"""The API writer's pairs by passage, in the run folder's ``auditor/``: the launcher writes, the auditor reads."""


def run_adapt(config: AdaptConfig, threads: int | None = None, console: Console | None = None) -> int:
    """Split the documents, check τ can be written, run the three roles, then write the report."""
    console = console or Console()
    run_dir = config.run_dir or Path("runs") / time.strftime("adapt-%Y%m%d-%H%M%S")
    documents = config.documents.model_copy(
        update={
            "paths": [p.resolve() for p in config.documents.paths],
            "questions": [p.resolve() for p in config.documents.questions],
            "writer_api": _resolved_key_file(config.documents.writer_api),
            "writer_cache": _writer_cache(config.documents, run_dir),
        }
    )
    if not documents.paths:
        raise DatasetError("no documents: give at least one file or folder")
    resolve_model(config.model)  # convert the default once, before the tokenizer and the three roles need it
    # What the auditor will hold, checked here before any role starts (a bad question file is one line).
    tau = write_tau(documents, token_counter(config.model), _pair_writer(config, documents))
    for problem in tau.problems:
        console.print(f"[yellow]{problem}[/]")
    if not tau.passages:
        raise DatasetError("no passage of the documents has τ to be judged on; nothing to adapt")
    _summary(tau, console)
    contexts = run_dir / "contexts.json"
    _write_contexts(tau, contexts)
    opts = LaunchConfig(
        run_dir=run_dir,
        model=config.model,
        teacher_model=config.teacher,
        teacher_base_url=config.teacher_base_url,
        device=config.device,
        dtype=config.dtype,
        threads=threads,
        data=contexts,
        k=config.k,
        metric=config.metric,
        min_gain=config.min_gain,
        train=config.model_dump(include=set(STUDENT_TRAINING), exclude_none=True),
        max_retention_drop=config.max_retention_drop,
        auditor_settings=_auditor_settings(config, documents),
        promote_each=config.promote == "accepted",
        rehearsal=config.rehearsal,
        teacher_settings=config.model_dump(include=set(TEACHER_WRITING), exclude_none=True),
    )
    code = run_demo(opts, console, title="seal adapt")
    if code == 0:
        console.print(write_report(run_dir, [p.passage.context() for p in tau.passages.values()]))
    return code


def _auditor_settings(config: AdaptConfig, documents: DocumentTauConfig) -> dict[str, Any]:
    """The auditor settings ``seal adapt`` adds to the launcher's: the documents, the limits it was given."""
    given = {
        "max_earlier_drop": config.max_earlier_drop,
        "probes": config.probes,
        "probe_answers_may_lose": config.probe_answers_may_lose,
    }
    return {"documents": documents, **{name: value for name, value in given.items() if value is not None}}


def _pair_writer(config: AdaptConfig, documents: DocumentTauConfig) -> PairWriter | None:
    """With ``--documents.writer model`` or ``api``, a writer here that writes what the auditor will (greedy; the
    API model's pairs are kept in the writer cache the auditor reads), so the passages without τ are known before
    any role starts."""
    from library.models import load_model

    return pair_writer(documents, lambda: load_model(config.model, config.device, config.dtype))


def _writer_cache(documents: DocumentTauConfig, run_dir: Path) -> Path | None:
    """The API writer's cache: the one given, else the run folder's ``auditor/``; none for the other writers."""
    if documents.writer != "api":
        return documents.writer_cache
    return (documents.writer_cache or run_dir / "auditor" / WRITTEN_PAIRS).resolve()


def _resolved_key_file(api: APIModelConfig | None) -> APIModelConfig | None:
    """The writer's API settings with an absolute key file, as the auditor process reads it from another folder."""
    if api is None or api.key_file is None:
        return api
    return api.model_copy(update={"key_file": api.key_file.resolve()})


def _summary(tau: DocumentTau, console: Console) -> None:
    pairs = [(len(t.reward), len(t.acceptance)) for t in tau.passages.values()]
    dropped = sum(sum(t.dropped.values()) for t in tau.passages.values())
    console.print(
        f"{len(tau.documents.documents)} documents, {len(tau.documents.passages)} passages, "
        f"{len(tau.passages)} with τ: "
        f"{sum(r for r, _ in pairs)} reward and {sum(a for _, a in pairs)} sealed acceptance questions "
        f"({dropped} written or given pairs dropped by the checks)"
    )


def _write_contexts(tau: DocumentTau, path: Path) -> None:
    """The teacher's data: each passage's title and text, no questions; replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"title": t.passage.title, "context": t.passage.text} for t in tau.passages.values()]
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(entries, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(scratch, path)
