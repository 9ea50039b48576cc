"""A role's compute on N Ray actors, each holding the base model once; the role process stays the boundary.

A role (student, auditor) keeps its socket, its store and its registry, and hands pure compute
(training a shard of candidates, answering, scoring) to a :class:`WorkerPool`: N actors, each built
from a picklable factory (a class whose constructor loads the model). Jobs are plain picklable
values in and out (tensors, bytes, lists); nothing an actor returns is trusted beyond that.

Faults: a job whose actor died (killed, out of memory, its node lost) is rerun on a fresh actor in
its place; the jobs are seeded, so the rerun gives the same result. Each death counts once against
``max_worker_failures`` per call; one more, and the call raises :class:`WorkerFailed` naming the
worker and the cause, which the service's dispatcher sends back as a typed ``worker_failed`` error.
An exception raised *inside* a job is not a death: it is re-raised as is (a rerun would repeat it).

Ray is imported only when a pool is built, so seal runs without it at ``workers: 1``. A pool joins
the cluster at ``ray_address``, or else starts a local runtime that the last pool of the process
shuts down (with every process it started: the tests check).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from protocol.codec import ProtocolError

log = logging.getLogger(__name__)

_SEAL_ROOT = str(Path(__file__).resolve().parents[1])  # the folder holding library/, student/, ...


class WorkersConfig(BaseModel):
    """Where a role's compute runs: in its own process (``workers: 1``) or on Ray actors."""

    workers: int = Field(
        1, ge=1, description="Ray actors doing this role's compute, each holding the base model; 1: in process, no Ray."
    )
    ray_address: str | None = Field(
        None,
        description="Join this Ray cluster instead of starting a local runtime: ray://HEAD:10001 from outside it, "
        "HOST:6379 or 'auto' on one of its nodes.",
    )
    threads_per_worker: int = Field(1, ge=1, description="torch CPU threads per actor (on CPUs; GPUs get one each).")
    max_worker_failures: int = Field(
        2, ge=0, description="Worker deaths one request survives (each dead worker is replaced, its jobs rerun)."
    )
    ray_num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs of a local Ray runtime (default: workers x threads per worker)."
    )
    ray_object_store_mb: int = Field(256, ge=75, description="Object store of a local Ray runtime, in MB.")


class WorkerFailed(ProtocolError):
    """A request's worker died more often than ``max_worker_failures`` allows: which worker, and why."""

    def __init__(self, worker: str, cause: str):
        super().__init__("worker_failed", f"worker {worker} failed: {cause}")
        self.worker = worker
        self.cause = cause


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to get it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--workers above 1 needs Ray: pip install 'seal[ray]'") from exc
    return ray


# --------------------------------------------------------------------------- the runtime, shared per process

_runtime_lock = threading.Lock()
_runtime_users = 0
_runtime_owned = False


def _acquire_runtime(config: WorkersConfig) -> None:
    """Join ``config.ray_address``, or start a local runtime, unless this process is already connected."""
    global _runtime_users, _runtime_owned
    ray = import_ray()
    with _runtime_lock:
        if not ray.is_initialized():
            env = {"PYTHONPATH": os.pathsep.join(p for p in (_SEAL_ROOT, os.environ.get("PYTHONPATH")) if p)}
            env["OMP_NUM_THREADS"] = str(config.threads_per_worker)  # what torch.set_num_threads does not reach
            common = {"runtime_env": {"env_vars": env}, "logging_level": logging.WARNING, "log_to_driver": False}
            if config.ray_address:
                ray.init(address=config.ray_address, **common)
            else:
                ray.init(
                    address="local",
                    num_cpus=config.ray_num_cpus or config.workers * config.threads_per_worker,
                    object_store_memory=config.ray_object_store_mb * 1024 * 1024,
                    include_dashboard=False,
                    **common,
                )
                _runtime_owned = True
        _runtime_users += 1


def _release_runtime() -> None:
    """The last pool of the process shuts down the runtime it started (and every process of it)."""
    global _runtime_users, _runtime_owned
    ray = import_ray()
    with _runtime_lock:
        _runtime_users -= 1
        if _runtime_users == 0 and _runtime_owned:
            ray.shutdown()
            _runtime_owned = False


# --------------------------------------------------------------------------- the actor


class _Worker:
    """What runs in each actor: the factory's object, built once, and calls of its methods."""

    def __init__(self, factory: Callable[..., Any], args: tuple[Any, ...], threads: int):
        import torch

        torch.set_num_threads(threads)
        self.state = factory(*args)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self.state, method)(*args)

    def pid(self) -> int:
        return os.getpid()

    def usage(self, reset_peak: bool = False) -> tuple[float, float]:
        """This process's CPU seconds so far and its peak resident memory (GiB; Linux), then reset the peak."""
        status = Path("/proc/self/status")
        lines = status.read_text().splitlines() if status.exists() else []
        peak_kib = next((int(line.split()[1]) for line in lines if line.startswith("VmHWM:")), 0)
        if reset_peak:
            with contextlib.suppress(OSError):  # writing 5 resets VmHWM to the current RSS
                Path("/proc/self/clear_refs").write_text("5")
        return time.process_time(), peak_kib / 2**20


class WorkerPool:
    """N actors built from ``factory(*args)``; :meth:`run` spreads jobs over them and survives deaths."""

    def __init__(
        self, name: str, config: WorkersConfig, factory: Callable[..., Any], args: tuple[Any, ...], device: str
    ) -> None:
        """Start (or join) Ray and the actors, and wait until each has built its object (loaded the model).

        On ``device`` 'cuda', or 'auto' on a cluster with GPUs, each actor takes one GPU; else
        ``threads_per_worker`` CPUs.
        """
        _acquire_runtime(config)
        ray = import_ray()
        self.name, self.config = name, config
        gpu = device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1)
        resources = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": config.threads_per_worker}
        self._actor_class = ray.remote(**resources)(_Worker)
        self._args = (factory, args, config.threads_per_worker)
        self._actors: list[Any] = []
        self._closed = False
        try:
            self._actors = [self._actor_class.remote(*self._args) for _ in range(config.workers)]
            ray.get([actor.pid.remote() for actor in self._actors])
        except BaseException:
            self.close()
            raise
        log.info("%s: %d Ray workers ready", name, config.workers)

    def worker_name(self, index: int) -> str:
        """The name a worker goes by in logs and errors."""
        return f"{self.name}-worker-{index}"

    def pids(self) -> list[int]:
        """Each actor's process id, in worker order."""
        return import_ray().get([actor.pid.remote() for actor in self._actors])

    def usage(self, reset_peak: bool = False) -> list[tuple[float, float]]:
        """Each worker's CPU seconds and peak resident memory in GiB (for benches), in worker order."""
        return import_ray().get([actor.usage.remote(reset_peak) for actor in self._actors])

    def run(self, method: str, jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``method(*job)`` on the workers' objects, job ``i`` on worker ``i % N``; the results in job order.

        A job whose worker died is rerun on that worker's replacement; past ``max_worker_failures``
        deaths in this call, :class:`WorkerFailed`.
        """
        ray = import_ray()
        pending: dict[Any, tuple[int, int]] = {}  # object ref -> (job index, worker index)
        generation = [0] * len(self._actors)  # bumped when a worker is replaced
        submitted_at: dict[int, int] = {}  # job index -> the generation of the worker it went to
        results: dict[int, Any] = {}
        failures = 0

        def submit(job: int) -> None:
            worker = job % len(self._actors)
            pending[self._actors[worker].call.remote(method, *jobs[job])] = (job, worker)
            submitted_at[job] = generation[worker]

        for job in range(len(jobs)):
            submit(job)
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            job, worker = pending.pop(ready)
            try:
                results[job] = ray.get(ready)
            except ray.exceptions.RayActorError as exc:
                if submitted_at[job] == generation[worker]:  # a new death, not one already seen by another job
                    failures += 1
                    self._replace(worker)
                    generation[worker] += 1
                    log.warning("%s died (%s); replaced", self.worker_name(worker), _first_line(exc))
                    if failures > self.config.max_worker_failures:
                        self._cancel(pending)
                        raise WorkerFailed(self.worker_name(worker), _first_line(exc)) from None
                submit(job)
            except ray.exceptions.RayTaskError as exc:  # the job itself raised: a rerun would raise again
                self._cancel(pending)
                raise exc.as_instanceof_cause() from None
        return [results[i] for i in range(len(jobs))]

    def _replace(self, worker: int) -> None:
        ray = import_ray()
        ray.kill(self._actors[worker], no_restart=True)
        self._actors[worker] = self._actor_class.remote(*self._args)

    @staticmethod
    def _cancel(pending: dict[Any, tuple[int, int]]) -> None:
        ray = import_ray()
        for ref in pending:
            ray.cancel(ref)

    def close(self) -> None:
        """Stop the actors; the last pool of the process also stops the runtime it started."""
        if self._closed:
            return
        self._closed = True
        ray = import_ray()
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        _release_runtime()


def shards(count: int, parts: int) -> list[range]:
    """``range(count)`` cut into ``min(parts, count)`` contiguous runs whose sizes differ by at most one.

    The first runs take the extra items: ``shards(5, 2)`` is ``[range(0, 3), range(3, 5)]``.
    """
    if count == 0:
        return []
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (1 if part < extra else 0))
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"
