"""The auditor's likelihood scoring on Ray workers; the auditor process keeps τ's bookkeeping, the ledger and the key.

With ``--workers N`` the models of one judgement (the base and the candidates) are spread over N
actors (:class:`library.ray_pool.WorkerPool`), each holding the base model once and scoring its share
in one batched pass (:func:`auditor.scoring.score_models`, the same code as in process). The actors
see τ's questions and answers for that call: they run the auditor's own code, on the auditor's side of
the boundary; the student never does. Adapters travel as the files the auditor read from the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from auditor.config import AuditorConfig
from auditor.scoring import ModelScores, score_models
from library.adapter_files import AdapterFiles, pack_folder, unpacked
from library.datasets import QAItem
from library.models import load_model
from library.ray_pool import WorkerPool, shards


class AuditorWorker:
    """What one Ray actor holds: the base model, loaded once; it scores its share of the models."""

    def __init__(self, model: str, device: str, dtype: str) -> None:
        self.model, self.tokenizer = load_model(model, device, dtype)

    def score(
        self,
        models: list[str | None],
        adapters: Mapping[str, AdapterFiles],
        tau: list[QAItem],
        pairs: list[tuple[str, str]] | None,
        instruction: str | None = None,
    ) -> dict[str | None, ModelScores]:
        """:func:`auditor.scoring.score_models` on ``models`` (None: the base), with their adapters' files."""
        with unpacked(adapters) as folders:
            return score_models(self.model, self.tokenizer, models, folders, tau, pairs, instruction)


class AuditorWorkers:
    """The auditor's pool of :class:`AuditorWorker` actors."""

    def __init__(self, config: AuditorConfig) -> None:
        """Start (or join) Ray and ``config.workers`` actors, each loading the base model."""
        self.config = config
        args = (config.model, config.device, config.dtype)
        self.pool = WorkerPool("auditor", config, AuditorWorker, args, config.device)

    def score(
        self,
        models: list[str | None],
        folders: Mapping[str, Path],
        tau: list[QAItem],
        pairs: list[tuple[str, str]] | None = None,
        instruction: str | None = None,
    ) -> dict[str | None, ModelScores]:
        """What :func:`auditor.scoring.score_models` returns, the models spread over the workers."""
        jobs = []
        for part in shards(len(models), self.config.workers):
            share = models[part.start : part.stop]
            adapters = {m: pack_folder(folders[m]) for m in share if m is not None}
            jobs.append((share, adapters, tau, pairs, instruction))
        scores: dict[str | None, ModelScores] = {}
        for reply in self.pool.run("score", jobs):
            scores |= reply
        return {m: scores[m] for m in models}

    def pids(self) -> list[int]:
        """The workers' process ids (for the fault tests)."""
        return self.pool.pids()

    def close(self) -> None:
        """Stop the actors (and the local Ray runtime, once no pool of this process uses it)."""
        self.pool.close()
