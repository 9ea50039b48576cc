"""τ for documents, kept by the auditor: it reads the documents itself, writes or takes the questions, seals half.

The auditor splits the same documents the teacher is given (:mod:`library.documents`, the same content ids),
writes cloze pairs for each passage (:mod:`auditor.question_writer`) or takes the user's
(:mod:`auditor.question_files`), keeps the pairs that pass the checks, and splits each passage's pairs into
a reward set (the verdict's reward, what ReST^EM trains the teacher on) and a sealed acceptance set that
only the accept/reject decision reads. No question crosses the wire to the teacher.

Each document is recorded in the ledger when first read and again when it changed: a ``document`` entry
naming it, its passage ids, the ids it had before, and per passage the count and sha256 of its τ.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from auditor.config import AuditorConfig
from auditor.model_question_writer import PairWriter, api_pairs, cached_pairs, model_pairs
from auditor.question_files import assign_questions
from auditor.question_writer import check_pairs, cloze_pairs, split_sets
from auditor.tau_config import DocumentTauConfig
from library.api_models import connect
from library.backend_errors import TeacherBackendError
from library.datasets import DEMO_DOCUMENTS, QAItem, load_questions
from library.documents import DocumentSet, Passage, TokenCounter, read_documents, token_counter
from library.ledger import Ledger
from protocol.canonical import canonical_json, sha256_hex

log = logging.getLogger(__name__)


@dataclass
class PassageTau:
    """One passage's τ: the reward set and the sealed acceptance set, with where the pairs came from."""

    passage: Passage
    reward: list[QAItem]
    acceptance: list[QAItem]
    source: str  # "written", "user" or "user+written"
    dropped: Counter[str]

    def summary(self) -> dict[str, Any]:
        """What the ledger records of it: counts, reasons for drops and a hash of the pairs, never the pairs."""
        pairs = [[q.question, q.answers] for q in self.reward + self.acceptance]
        return {
            "source": self.source,
            "reward": len(self.reward),
            "acceptance": len(self.acceptance),
            "dropped": dict(self.dropped),
            "sha256": sha256_hex(canonical_json(pairs)),
        }


@dataclass
class DocumentTau:
    """Everything τ-related the auditor built from its documents."""

    documents: DocumentSet
    passages: dict[str, PassageTau] = field(default_factory=dict)  # passage id -> its τ (passages with τ only)
    problems: list[str] = field(default_factory=list)  # one line each: unusable documents, passages left without τ


@dataclass
class HeldTau:
    """τ as the auditor's judge reads it, by context id; with documents, each passage's reward set comes first."""

    questions: dict[str, list[QAItem]]
    reward_counts: dict[str, int]  # context id -> its reward set's size (absent: no split, τ decides and rewards)
    documents: DocumentTau | None = None

    def record(self, ledger: Ledger) -> None:
        """Record the documents read (new or changed ones) in the auditor's ledger."""
        if self.documents is not None:
            record_documents(ledger, self.documents)


def auditor_tau(config: AuditorConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> HeldTau:
    """The auditor's τ: written from its documents (split into reward and acceptance sets), else read from --data.

    ``model`` is the auditor's own, which writes the pairs with ``--documents.writer model``.
    """
    if not config.documents.paths:
        return HeldTau(
            load_questions(config.data or DEMO_DOCUMENTS, limit=config.limit, per_title=config.per_title), {}
        )
    tau = write_tau(
        config.documents, token_counter(config.model), pair_writer(config.documents, lambda: (model, tokenizer))
    )
    for problem in tau.problems:
        log.warning("%s", problem)
    kept = sum(len(t.reward) + len(t.acceptance) for t in tau.passages.values())
    log.info("τ: %d pairs for %d passages of %d documents", kept, len(tau.passages), len(tau.documents.documents))
    questions = {cid: [*t.reward, *t.acceptance] for cid, t in tau.passages.items()}
    return HeldTau(questions, {cid: len(t.reward) for cid, t in tau.passages.items()}, tau)


def pair_writer(
    config: DocumentTauConfig, local_model: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]
) -> PairWriter | None:
    """Who writes a passage's pairs under ``config.writer``: None for cloze (:func:`write_tau`'s own), the local
    model ``local_model()`` gives (loaded only then), or the API model, connected and checked here and asked
    once per passage where ``config.writer_cache`` is set."""
    if config.writer == "model":
        model, tokenizer = local_model()
        return lambda passage: model_pairs(model, tokenizer, passage)
    if config.writer == "api" and config.writer_api is not None:  # (the config's own check makes it given)
        client = connect(config.writer_api)  # one line if the server, the key or the model is wrong
        ask: PairWriter = lambda passage: api_pairs(client, passage)  # noqa: E731
        return ask if config.writer_cache is None else cached_pairs(ask, config.writer_cache, config.writer_api.model)
    return None


def write_tau(
    config: DocumentTauConfig, count_tokens: TokenCounter, write_with_model: PairWriter | None = None
) -> DocumentTau:
    """Read the documents, then give each passage its checked, split τ; a passage with fewer than two pairs has none.

    ``write_with_model`` writes a passage's pairs when ``config.writer`` is "model" or "api"
    (:func:`pair_writer`); a passage whose writer fails is skipped with one line, the others go on.
    """
    if config.writer != "cloze" and write_with_model is None:
        raise ValueError(f"--documents.writer {config.writer} needs a writer: the auditor's model or its API model")
    writer = cloze_pairs if config.writer == "cloze" else write_with_model
    documents = read_documents(config.paths, config.max_tokens, count_tokens)
    given, given_dropped = assign_questions(config.questions, documents)
    tau = DocumentTau(documents, problems=list(documents.problems))
    if given_dropped:
        tau.problems.append(f"user questions dropped: {_reasons(given_dropped)}")
    for passage in documents.passages:
        user = given.get(passage.context_id, [])
        try:
            written = [] if user and config.user_questions == "instead" else writer(passage)
        except TeacherBackendError as exc:
            tau.problems.append(f"{_where(passage)}: the question writer failed ({exc}); passage skipped")
            continue
        kept, dropped = check_pairs(passage, [*user, *written], config.max_questions)
        source = "+".join(name for name, pairs in (("user", user), ("written", written)) if pairs) or "written"
        if len(kept) < 2:
            tau.problems.append(
                f"{_where(passage)}: {len(kept)} of "
                f"{len(user) + len(written)} question-answer pairs survived the checks"
                f"{' (dropped: ' + _reasons(dropped) + ')' if dropped else ''}; two are needed, passage skipped"
            )
            continue
        reward, acceptance = split_sets(kept, config.acceptance_share)
        tau.passages[passage.context_id] = PassageTau(passage, reward, acceptance, source, dropped)
    return tau


def record_documents(ledger: Ledger, tau: DocumentTau) -> list[dict[str, Any]]:
    """A ``document`` entry for each document read for the first time or changed since its last entry."""
    last = {e["record"]["document"]: e["record"] for e in ledger.entries() if e["kind"] == "document"}
    recorded = []
    for name, ids in tau.documents.documents.items():
        record = {
            "document": name,
            "passage_ids": ids,
            "previous_passage_ids": last[name]["passage_ids"] if name in last else None,
            "tau": {cid: tau.passages[cid].summary() for cid in ids if cid in tau.passages},
        }
        before = last.get(name)
        if before is not None and (before["passage_ids"], before["tau"]) == (ids, record["tau"]):
            continue  # unchanged: nothing new to record
        ledger.append("document", record)
        recorded.append(record)
        if before is not None:
            log.info("document %s changed: passages %s -> %s", name, before["passage_ids"], ids)
    return recorded


def _where(passage: Passage) -> str:
    return f"{passage.document} ('{passage.title}', passage {passage.context_id})"


def _reasons(dropped: Counter[str]) -> str:
    return ", ".join(f"{n} {why}" for why, n in dropped.most_common())
