"""The student's training and answering on Ray workers; the student process stays the boundary.

With ``--workers N`` the student keeps its socket, its artifact store and its registry, and hands
compute to N actors (:class:`library.ray_pool.WorkerPool`), each holding the base model once:

- training: a request's K jobs are cut into shards (``--train-shards``, default one per worker),
  each trained in one batched pass (:func:`student.batched.train_adapters`) on a worker, which sends
  back the adapter's files; the student stores them as it stores its own;
- answering: the requested adapters are spread over the workers, each answering all questions
  with its share in one mixed-adapter batch (:func:`student.answering.answer_with_adapters`).

A candidate's adapter (hence its id) depends on its job, its seed and the shard it was trained in,
never on which or how many workers: the one-process path trains the same shards in turn
(:func:`train_in_shards`), and a worker that dies is replaced and its shard retrained, identically.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.adapter_files import AdapterFiles, pack_folder, unpack_folder, unpacked
from library.models import load_model
from library.ray_pool import WorkerPool, shards
from protocol.messages import TrainConfig, TrainJob
from student.answering import answer_with_adapters
from student.batched import train_adapters
from student.config import StudentConfig
from student.training import TrainedAdapter

Jobs = Sequence[tuple[TrainJob, TrainConfig]]


def train_in_shards(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, jobs: Jobs, base_model: str, parts: int | None
) -> list[TrainedAdapter]:
    """The jobs trained shard by shard in this process: the adapters a pool of workers would return."""
    trained: list[TrainedAdapter] = []
    try:
        for part in shards(len(jobs), parts or 1):
            trained += train_adapters(model, tokenizer, [jobs[i] for i in part], base_model)
    except BaseException:
        for result in trained:
            shutil.rmtree(result.folder, ignore_errors=True)
        raise
    return trained


class StudentWorker:
    """What one Ray actor holds: the base model, loaded once; it trains shards and answers questions."""

    def __init__(self, model: str, device: str, dtype: str) -> None:
        self.model, self.tokenizer = load_model(model, device, dtype)

    def train(self, jobs: Jobs, base_model: str) -> list[tuple[AdapterFiles, TrainedAdapter]]:
        """One shard in one batched pass: each adapter's files and its training record."""
        out = []
        for result in train_adapters(self.model, self.tokenizer, jobs, base_model):
            try:
                out.append((pack_folder(result.folder), result))
            finally:
                shutil.rmtree(result.folder, ignore_errors=True)
        return out

    def answer(
        self,
        adapters: Mapping[str, AdapterFiles],
        questions: list[str],
        max_new_tokens: int,
        batch_size: int,
        instruction: str | None = None,
    ) -> list[list[str]]:
        """Every question answered by each adapter of ``adapters``, in their order (after ``instruction``)."""
        with unpacked(adapters) as folders:
            return answer_with_adapters(
                self.model, self.tokenizer, folders, questions, max_new_tokens, batch_size, instruction=instruction
            )


class StudentWorkers:
    """The student's pool of :class:`StudentWorker` actors."""

    def __init__(self, config: StudentConfig) -> None:
        """Start (or join) Ray and ``config.workers`` actors, each loading the base model."""
        self.config = config
        self.pool = WorkerPool(
            "student", config, StudentWorker, (config.model, config.device, config.dtype), config.device
        )

    def train(self, jobs: Jobs) -> list[TrainedAdapter]:
        """One adapter per job, in order, each in a scratch folder of this process (the caller stores it)."""
        parts = shards(len(jobs), self.config.train_shards or self.config.workers)
        replies = self.pool.run("train", [([jobs[i] for i in part], self.config.model) for part in parts])
        trained: list[TrainedAdapter] = []
        try:
            for files, result in (item for reply in replies for item in reply):
                trained.append(replace(result, folder=unpack_folder(files)))
        except BaseException:
            for result in trained:
                shutil.rmtree(result.folder, ignore_errors=True)
            raise
        return trained

    def answer(
        self, folders: Mapping[str, Path], questions: list[str], max_new_tokens: int, instruction: str | None = None
    ) -> list[list[str]]:
        """One list of answers per adapter of ``folders`` (stored, hash-checked), in order."""
        ids = list(folders)
        jobs = [
            (
                {a: pack_folder(folders[a]) for a in ids[part.start : part.stop]},
                questions,
                max_new_tokens,
                self.config.answer_batch_size,
                instruction,
            )
            for part in shards(len(ids), self.config.workers)
        ]
        return [answers for reply in self.pool.run("answer", jobs) for answers in reply]

    def pids(self) -> list[int]:
        """The workers' process ids (for the fault tests)."""
        return self.pool.pids()

    def close(self) -> None:
        """Stop the actors (and the local Ray runtime, once no pool of this process uses it)."""
        self.pool.close()
