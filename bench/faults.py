"""Fault and attack bench (#15): kill -9 a role mid-pass and resume; fuzz the student and auditor servers.

Run: ``python -m bench.faults --quick`` (3 trials per role, 1,000 frames, a few minutes on 2 cores), or
``python -m bench.faults --trials 20 --frames 10000`` for the full run. Everything runs the product's
own code: ``seal demo`` passes (with the tiny random test model), ``seal promote`` / ``seal ledger
verify``, role processes started from ``apps.demo``'s commands under ``apps.processes.ProcessGroup``,
frames built by ``protocol.codec`` and sent through ``protocol.transport`` sockets and ``Client``.

Fault matrix, per trial: a ``seal demo`` pass; SIGKILL to one role's process at a random point
(during start-up, or while it works); ``seal demo --run-dir SAME`` to resume; then the end state:
the pass finished, every verdict the teacher received is in the ledger and agrees with it, no two
verdicts for one (adapter, self-edit), one ``seal promote`` of an accepted adapter (and one refused of a
rejected one) and every registry promotion backed by a valid accepting verdict, no traceback in a log,
``seal ledger verify --keys`` passes. Fuzz run: valid request messages, their ordinary mutations and the
known killer patterns, one frame at a time, each followed by a ping that must be answered within 5 s.

Resumable: with ``--work DIR``, finished trials (``DIR/trials.jsonl``) and a finished fuzz run (``DIR/fuzz.json``)
are kept, and a rerun with the same ``--work`` does only the rest.

Output: a table, and ``faults.json`` + ``faults.md`` in ``--out`` (default ``bench/results/faults/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil
import zmq
from rich.console import Console
from rich.table import Table

from apps.demo import LaunchConfig, role_commands, role_configs, write_role_configs
from apps.processes import ProcessGroup, free_tcp_ports
from library.jsonl import read_jsonl
from library.ledger import read_entries
from protocol.codec import (
    AUDITOR_CHANNEL,
    DEFAULT_MAX_MESSAGE_BYTES,
    STUDENT_CHANNEL,
    Channel,
    ProtocolError,
    decode,
    encode,
    make_envelope,
)
from protocol.messages import Verdict
from protocol.security import client_security, create_role_keys
from protocol.signing import VerdictRefused, check_verdict, create_signing_key, load_verify_key
from protocol.transport import Client, Heartbeat, TransportError, close_socket, open_socket
from tests.examples import EXAMPLES
from tests.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("student", "auditor", "teacher")
LIMIT, K, EPOCHS = 2, 2, 3  # the demo pass of every trial: 2 contexts, 2 self-edits each
PING_TIMEOUT_S = 5.0
TRACEBACK = "Traceback (most recent call last)"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "160"}


# --------------------------------------------------------------------------- processes


def seal(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """One ``seal`` CLI command (``python -m apps``), its output captured."""
    argv = [sys.executable, "-m", "apps", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=ENV, cwd=ROOT)


def role_pids(parent: int) -> dict[str, int]:
    """The role processes among ``parent``'s children, by their command line ``-m apps ROLE``."""
    found = {}
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        for i in range(len(argv) - 2):
            if argv[i : i + 2] == ["-m", "apps"] and argv[i + 2] in ROLES:
                found[argv[i + 2]] = child.pid
    return found


class RssSampler:
    """Samples the resident memory of some processes every ``every_s``; keeps each one's peak (MiB)."""

    def __init__(self, pids: Callable[[], dict[str, int]], every_s: float = 0.2):
        self.pids, self.every_s, self.peak_mib = pids, every_s, Counter[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for name, pid in self.pids().items():
                try:
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak_mib[name] = max(self.peak_mib[name], round(rss, 1))


# --------------------------------------------------------------------------- fault matrix


def demo_argv(model: Path, run_dir: Path) -> list[str]:
    """The ``seal demo`` pass every trial runs (and resumes with the same command)."""
    sizes = ["--limit", str(LIMIT), "--k", str(K), "--epochs", str(EPOCHS)]
    return [
        sys.executable,
        "-m",
        "apps",
        "demo",
        "--model",
        str(model),
        *sizes,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--run-dir",
        str(run_dir),
    ]


def _log_sizes(run_dir: Path) -> dict[str, int]:
    """Where each role log ends now, so that a pass reads only what it appended."""
    return {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in _logs()}


def _logs() -> tuple[str, ...]:
    return ("student.log", "auditor.log", "demo.log")  # demo.log: the supervisor's and the teacher's output


def _is_ready(run_dir: Path, since: dict[str, int]) -> bool:
    """All three roles up in this pass: both servers serving and the teacher waiting for them."""
    marks = {"student.log": "serving on", "auditor.log": "serving on", "demo.log": "ready; waiting"}
    return all(mark in _new_text(run_dir / name, since[name]) for name, mark in marks.items())


def _new_text(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def run_pass(argv: list[str], run_dir: Path, bound_s: float, kill: tuple[str, str, float] | None) -> dict[str, Any]:
    """One ``seal demo`` pass, its role processes' RSS sampled; ``kill`` = (role, phase, delay_s) sends SIGKILL.

    ``phase`` "startup" counts the delay from the launch, "work" from the moment all three roles are up.
    A pass still running after ``bound_s`` is a hang: it is stopped and reported.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    since = _log_sizes(run_dir)
    started = time.monotonic()
    with (run_dir / "demo.log").open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
    landed, hung = None, False
    with RssSampler(lambda: role_pids(proc.pid)) as rss:
        if kill is not None:
            landed = _kill_at(proc, run_dir, since, kill, started + bound_s)
        try:
            proc.wait(timeout=max(1.0, started + bound_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = True
            proc.terminate()
            proc.wait(timeout=30)
    tracebacks = _tracebacks(run_dir, since)
    return {
        "rc": proc.returncode,
        "hung": hung,
        "seconds": round(time.monotonic() - started, 1),
        "kill_landed": landed,
        "peak_rss_mib": dict(rss.peak_mib),
        "tracebacks": tracebacks,
    }


def _kill_at(proc: subprocess.Popen[bytes], run_dir: Path, since: dict[str, int], kill: tuple, deadline: float) -> bool:
    """Wait for the kill point, then SIGKILL the role; False if the role was gone by then (the pass outran it)."""
    role, phase, delay_s = kill
    while phase == "work" and not _is_ready(run_dir, since) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay_s)
    pid = role_pids(proc.pid).get(role)
    if pid is None or proc.poll() is not None:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _tracebacks(run_dir: Path, since: dict[str, int]) -> list[dict[str, Any]]:
    """Every Python traceback a role wrote during the pass: its log, its exception, and whether it was handled.

    Handled: the product logged it (``log.exception``: an ERROR line just before it, e.g. "handler failed on
    JudgeCandidates", answered as a typed ``internal`` error) and the role went on; unhandled: the role died of it.
    """
    found = []
    for name in _logs():
        lines = _new_text(run_dir / name, since[name]).splitlines()
        for i, line in enumerate(lines):
            if TRACEBACK in line:
                rest = [x for x in lines[i + 1 :] if x and not x.startswith((" ", "\t"))]
                handled = i > 0 and " ERROR " in lines[i - 1]
                found.append({"log": name, "exception": rest[0][:300] if rest else "?", "handled": handled})
    return found


def crashes(tracebacks: list[dict[str, Any]]) -> int:
    """Tracebacks a role died of (not the ones it logged and served on)."""
    return sum(not t["handled"] for t in tracebacks)


def ledger_verdicts(run_dir: Path) -> list[dict[str, Any]]:
    """The verdict entries of the run's ledger: entry hash, adapter, self-edit, accepted."""
    path = run_dir / "ledger.jsonl"
    entries = read_entries(path) if path.exists() else []
    return [
        {
            "entry": e["hash"],
            "adapter_id": e["record"]["verdict"]["adapter_id"],
            "self_edit_id": e["record"]["verdict"]["self_edit_id"],
            "accepted": e["record"]["verdict"]["accepted"],
            "context_id": e["record"]["verdict"]["context_id"],
        }
        for e in entries
        if e["kind"] == "verdict"
    ]


def result_verdicts(run_dir: Path) -> list[dict[str, Any]]:
    """The verdicts the teacher received and kept, from its ``results.jsonl``."""
    path = run_dir / "results.jsonl"
    return [v for record in (read_jsonl(path) if path.exists() else []) for v in record["verdicts"]]


def verdict_problems(before: list[dict], after: list[dict], ledger_before: list[dict], ledger: list[dict]) -> dict:
    """Lost, contradicted, orphaned and duplicated verdicts across a kill and its resume.

    lost: a verdict the teacher received (results.jsonl, before or after the resume) that the ledger
    lacks or that disagrees with it, or one received before the kill and gone from results after.
    orphaned: an accepted ledger verdict of a context the teacher had not finished at the kill, that the
    resumed pass did not re-judge to the same verdict. duplicates: two ledger verdicts on one
    (adapter, self-edit).
    """
    by_entry = {v["entry"]: v for v in ledger}
    kept = {(v["adapter_id"], v["self_edit_id"], v["accepted"]) for v in after}
    lost = 0
    for v in {(v["ledger_entry"], v["adapter_id"]): v for v in before + after}.values():
        recorded = by_entry.get(v["ledger_entry"])
        if recorded is None or (recorded["adapter_id"], recorded["accepted"]) != (v["adapter_id"], v["accepted"]):
            lost += 1
    lost += sum((v["adapter_id"], v["self_edit_id"], v["accepted"]) not in kept for v in before)
    finished = {v["context_id"] for v in before}
    orphaned = sum(
        v["accepted"] and v["context_id"] not in finished and (v["adapter_id"], v["self_edit_id"], True) not in kept
        for v in ledger_before
    )
    pairs = Counter((v["adapter_id"], v["self_edit_id"]) for v in ledger)
    return {"lost": lost, "orphaned": orphaned, "duplicates": sum(n - 1 for n in pairs.values() if n > 1)}


def unaudited_promotions(run_dir: Path) -> tuple[int, int]:
    """(promotions, those without a valid, signed, accepting verdict in the ledger) in the run's registry."""
    history = run_dir / "store" / "served" / "history.jsonl"
    promotions = [e["record"] for e in read_entries(history) if e["kind"] == "promote"] if history.exists() else []
    ledger = {v["entry"]: v for v in ledger_verdicts(run_dir)}
    key = load_verify_key(run_dir / "keys")
    bad = 0
    for record in promotions:
        verdict, adapter = Verdict.model_validate(record["verdict"]), record["after"][-1]
        entry = ledger.get(verdict.ledger_entry or "")
        try:
            check_verdict(verdict, key, adapter)
        except VerdictRefused:
            bad += 1
            continue
        bad += entry is None or not entry["accepted"] or entry["adapter_id"] != adapter
    return len(promotions), bad


def promote_step(run_dir: Path, after: list[dict]) -> dict[str, Any]:
    """Start the run's student on its store and ``seal promote`` one accepted and one rejected adapter."""
    accepted = [v["adapter_id"] for v in after if v["accepted"]]
    rejected = [v["adapter_id"] for v in after if not v["accepted"]]
    if not accepted and not rejected:
        return {"promoted": None, "rejected_refused": None}
    configs = {role: run_dir / "config" / f"{role}.yaml" for role in ROLES}
    port, spare = free_tcp_ports(2)
    endpoint = f"tcp://127.0.0.1:{port}"
    argv = role_commands(LaunchConfig(run_dir=run_dir, threads=1), configs, endpoint, f"tcp://127.0.0.1:{spare}")
    keys = ["--keys", str(run_dir / "keys"), "--ledger", str(run_dir / "ledger.jsonl"), "--student", endpoint]
    with ProcessGroup() as group:
        group.spawn("student", argv["student"], run_dir / "student.log")
        _wait_for_ping(endpoint, STUDENT_CHANNEL, "cli", client_security(run_dir / "keys", "cli", "student"))
        promoted = seal("promote", accepted[0], *keys).returncode == 0 if accepted else None
        refused = seal("promote", rejected[0], *keys).returncode != 0 if rejected else None
    return {"promoted": promoted, "rejected_refused": refused}


def _wait_for_ping(endpoint: str, channel: Channel, sender: str, security: Any, within_s: float = 120) -> None:
    client = Client(endpoint, channel, sender, security=security)  # type: ignore[arg-type]
    deadline = time.monotonic() + within_s
    try:
        while True:
            try:
                client.ping(timeout_s=2.0)
                return
            except TransportError:
                if time.monotonic() > deadline:
                    raise
    finally:
        client.close()


def fault_trial(
    model: Path, run_dir: Path, kill: tuple[str, str, float], bound_s: float, promote: bool = True
) -> dict[str, Any]:
    """Kill one role at ``kill``'s point of a pass, resume the pass, and check the end state."""
    argv = demo_argv(model, run_dir)
    killed = run_pass(argv, run_dir, bound_s, kill)
    before, ledger_before = result_verdicts(run_dir), ledger_verdicts(run_dir)
    resumed = run_pass(argv, run_dir, bound_s, None)
    after = result_verdicts(run_dir)
    contexts = len(read_jsonl(run_dir / "results.jsonl")) if (run_dir / "results.jsonl").exists() else 0
    steps = promote_step(run_dir, after) if promote and not resumed["hung"] else {}
    promotions, unaudited = unaudited_promotions(run_dir)
    verify = seal("ledger", "verify", "--ledger", str(run_dir / "ledger.jsonl"), "--keys", str(run_dir / "keys"))
    peaks = Counter[str]()
    for part in (killed, resumed):
        for name, mib in part["peak_rss_mib"].items():
            peaks[name] = max(peaks[name], mib)
    return {
        "role": kill[0],
        "phase": kill[1],
        "delay_s": round(kill[2], 2),
        "run_dir": str(run_dir),
        "kill_landed": killed["kill_landed"],
        "resumed": resumed["rc"] == 0 and contexts == LIMIT,
        **verdict_problems(before, after, ledger_before, ledger_verdicts(run_dir)),
        "promotions": promotions,
        "unaudited_promotions": unaudited,
        **steps,
        "tracebacks": killed["tracebacks"] + resumed["tracebacks"],
        "hangs": int(killed["hung"]) + int(resumed["hung"]),
        "peak_rss_mib": dict(peaks),
        "ledger_verified": verify.returncode == 0,
        "seconds": [killed["seconds"], resumed["seconds"]],
    }


def reference_pass(model: Path, work: Path, bound_s: float) -> tuple[float, float]:
    """(start-up seconds, working seconds) of an undisturbed pass: the windows the kill points are drawn from.

    Kept in ``work/reference.json``, so that a resumed run draws the same kill points.
    """
    saved = work / "reference.json"
    if saved.exists():
        windows = json.loads(saved.read_text())
        return windows["ready_s"], windows["work_s"]
    ready_s, work_s = _time_reference_pass(model, work, bound_s)
    saved.write_text(json.dumps({"ready_s": ready_s, "work_s": work_s}))
    return ready_s, work_s


def _time_reference_pass(model: Path, work: Path, bound_s: float) -> tuple[float, float]:
    run_dir = work / "reference"
    since = _log_sizes(run_dir) if run_dir.exists() else dict.fromkeys(_logs(), 0)
    started = time.monotonic()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(run_pass(demo_argv(model, run_dir), run_dir, bound_s, None)))
    thread.start()
    while thread.is_alive() and not _is_ready(run_dir, since):
        time.sleep(0.05)
    ready_s = time.monotonic() - started
    thread.join()
    if result["rc"] != 0:
        raise SystemExit(f"the undisturbed reference pass failed (rc {result['rc']}); see {run_dir}/demo.log")
    return ready_s, max(0.5, result["seconds"] - ready_s)


def fault_matrix(model: Path, work: Path, opts: argparse.Namespace, rng: random.Random) -> list[dict[str, Any]]:
    """``opts.trials`` trials per role in ``opts.roles``, kill points drawn up front, ``opts.parallel`` at a time.

    ``seal promote`` runs in every ``opts.promote_every``-th trial of a role; the registry is checked in all.
    """
    bound_s = opts.pass_bound_s
    ready_s, work_s = (opts.startup_s, opts.work_s) if opts.work_s else reference_pass(model, work, bound_s)
    plans = []
    for i in range(opts.trials):
        for role in opts.roles:
            phase = "startup" if rng.random() < 0.25 else "work"
            delay = rng.uniform(0.5, ready_s) if phase == "startup" else rng.uniform(0.0, work_s)
            plans.append((work / f"{role}-{i}", (role, phase, delay), i % opts.promote_every == 0))

    finished = work / "trials.jsonl"  # one line per finished trial: a rerun with the same --work skips them
    done = {t["trial"]: t for t in read_jsonl(finished)} if finished.exists() else {}
    lock = threading.Lock()

    def one(plan: tuple[Path, tuple[str, str, float], bool]) -> dict[str, Any]:
        if plan[0].name in done:
            return done[plan[0].name]
        shutil.rmtree(plan[0], ignore_errors=True)  # a trial the last run left unfinished starts again
        trial = {"trial": plan[0].name, **fault_trial(model, plan[0], plan[1], bound_s, promote=plan[2])}
        _progress(f"fault {plan[0].name}: {_brief(trial)}")
        with lock, finished.open("a") as out:
            out.write(json.dumps(trial) + "\n")
        return trial

    if done:
        _progress(f"resuming: {len(done)} of {len(plans)} trials already finished in {work}")
    with ThreadPoolExecutor(max_workers=opts.parallel) as pool:
        return list(pool.map(one, plans))


def _brief(trial: dict[str, Any]) -> str:
    keys = ("phase", "delay_s", "kill_landed", "resumed", "lost", "duplicates", "hangs", "ledger_verified")
    return (
        ", ".join(f"{k}={trial[k]}" for k in keys)
        + f", crashes={crashes(trial['tracebacks'])}, handled={len(trial['tracebacks'])}"
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fuzz frames

DEEP = 1000
BIG_INT = "9" * 4400
SURROGATE = "\ud800"


def valid_frames(channel: Channel, sender: str) -> list[list[bytes]]:
    """Every valid request of ``channel`` (one per body in tests/examples.py), encoded by the codec."""
    requests = channel.type_tags("request")
    return [encode(make_envelope(body, sender)) for body in EXAMPLES if body.type in requests]  # type: ignore[attr-defined, arg-type]


def _objects(frames: list[bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(frames[0]), json.loads(frames[1])


def _dump(header: Any, body: Any) -> list[bytes]:
    return [json.dumps(header).encode(), json.dumps(body).encode()]


def _fresh_id(header: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**header, "id": f"{rng.getrandbits(64):016x}"}


def _some_key(rng: random.Random, obj: dict[str, Any]) -> str:
    return rng.choice(sorted(obj))


def mutate(kind: str, frames: list[bytes], rng: random.Random) -> list[bytes]:
    """One frame set of ``kind`` made from valid ``frames`` (a fresh message id unless the kind reuses one)."""
    header, body = _objects(frames)
    header = _fresh_id(header, rng)
    fresh = [json.dumps(header).encode(), frames[1]]
    if kind in MUTATIONS:
        return MUTATIONS[kind](fresh, header, body, rng)
    return fresh  # "valid"


def _bit_flip(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    part = rng.randrange(2)
    raw = bytearray(frames[part])
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(raw))
        raw[i] ^= 1 << rng.randrange(8)
    frames = list(frames)
    frames[part] = bytes(raw)
    return frames


def _truncate(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    part = rng.randrange(2)
    frames = list(frames)
    frames[part] = frames[part][: rng.randrange(len(frames[part]))]
    return frames


def _swap_fields(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    """Two fields' values swapped, in the header or the body (or the two frames swapped)."""
    if rng.random() < 0.2:
        return [frames[1], frames[0]]
    obj = header if rng.random() < 0.5 else body
    if len(obj) >= 2:
        a, b = rng.sample(sorted(obj), 2)
        obj[a], obj[b] = obj[b], obj[a]
    return _dump(header, body)


def _frame_count(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    return rng.choice([frames[:1], [*frames, frames[1]], [b"", *frames]])


def _deep_json(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    nested = b"[" * DEEP + b"]" * DEEP
    if rng.random() < 0.5:
        return [frames[0][:-1] + b',"deep":' + nested + b"}", frames[1]]
    return [frames[0], frames[1][:-1] + b',"deep":' + nested + b"}"]


def _big_int(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    field = rng.choice(["v", "ts", "body"])
    if field == "body":
        return [frames[0], frames[1][:-1] + b',"n":' + BIG_INT.encode() + b"}"]
    header[field] = 0
    return [json.dumps(header).encode().replace(f'"{field}": 0'.encode(), f'"{field}": {BIG_INT}'.encode()), frames[1]]


def _surrogate(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    """A lone surrogate in a header field or a body string, JSON-escaped or as raw (surrogatepass) bytes."""
    in_header = rng.random() < 0.5
    obj = header if in_header else body
    name = rng.choice(["id", "sender", "type", "correlation_id"]) if in_header else _some_key(rng, obj)
    obj[name] = SURROGATE + str(obj.get(name, ""))
    if rng.random() < 0.5:
        return _dump(header, body)  # json escapes it: "\ud800"
    raw = [json.dumps(header, ensure_ascii=False), json.dumps(body, ensure_ascii=False)]
    return [text.encode("utf-8", "surrogatepass") for text in raw]


def _wrong_type(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    obj = header if rng.random() < 0.5 else body
    name = _some_key(rng, obj)
    obj[name] = rng.choice([None, 7, -1.5, True, "x", [], {}, [1, "a"], {"type": "ping"}])
    return _dump(header, body)


def _unknown_field(frames: list[bytes], header: dict, body: dict, rng: random.Random) -> list[bytes]:
    obj = header if rng.random() < 0.5 else body
    obj[f"extra_{rng.randrange(100)}"] = rng.choice([1, "x", None, {"a": [1]}])
    return _dump(header, body)


MUTATIONS: dict[str, Callable[..., list[bytes]]] = {
    "bit_flip": _bit_flip,
    "truncate": _truncate,
    "swap_fields": _swap_fields,
    "frame_count": _frame_count,
    "deep_json": _deep_json,
    "big_int": _big_int,
    "surrogate": _surrogate,
    "wrong_type": _wrong_type,
    "unknown_field": _unknown_field,
}
KINDS = ["valid", *MUTATIONS, "reused_id"]


def oversized(frames: list[bytes], limit: int, whole: bool) -> list[bytes]:
    """Larger than the server's limit: one frame over it (cut off at the socket), or two that sum over it."""
    if whole:
        return [frames[0], frames[1][:-1] + b',"pad":"' + b"x" * (limit + 1) + b'"}']
    half = b"x" * (limit // 2 + 1)
    return [frames[0][:-1] + b',"pad":"' + half + b'"}', frames[1][:-1] + b',"pad":"' + half + b'"}']


# --------------------------------------------------------------------------- fuzz run


class FuzzTarget:
    """One running server under fuzz: a raw REQ socket for the frames, a typed Client for the pings."""

    def __init__(self, name: str, endpoint: str, channel: Channel, proc: subprocess.Popen, security: Any, sender: str):
        self.name, self.endpoint, self.channel, self.proc, self.security = name, endpoint, channel, proc, security
        self.pinger = Client(endpoint, channel, sender, retries=0, security=security)  # type: ignore[arg-type]
        self.ctx = zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.stats: dict[str, Any] = {"frames": 0, "replies": Counter(), "crashed": False, "hangs": 0, "stale": 0}

    def send(self, frames: list[bytes], wait_s: float) -> list[bytes] | None:
        """Send one frame set; its reply's frames, or None when none came within ``wait_s`` (socket reopened)."""
        if self.sock is None:
            self.sock = open_socket(
                self.ctx, zmq.REQ, self.endpoint, bind=False, security=self.security, heartbeat=Heartbeat()
            )
        self.sock.send_multipart(frames)
        self.stats["frames"] += 1
        if self.sock.poll(int(wait_s * 1000), zmq.POLLIN):
            return self.sock.recv_multipart()
        close_socket(self.sock)  # Lazy Pirate: a REQ socket without its reply cannot be reused
        self.sock = None
        return None

    def classify(self, reply: list[bytes] | None) -> str:
        """The reply's type (and an error's reason), as the product's codec decodes it."""
        if reply is None:
            return "no reply"
        try:
            body = decode(reply, self.channel, "reply").body
        except ProtocolError as exc:
            return f"undecodable reply ({exc.reason})"
        return f"error:{body.reason}" if body.type == "error" else body.type  # type: ignore[attr-defined]

    def alive(self) -> bool:
        """The server still runs and answers a ping within 5 s; a failure is counted as a crash or a hang."""
        if self.proc.poll() is not None:
            self.stats["crashed"] = True
            return False
        try:
            self.pinger.ping(timeout_s=PING_TIMEOUT_S)
        except TransportError:
            self.stats["hangs"] += 1
            self.pinger.close()
            return self.proc.poll() is None
        return True

    def close(self) -> None:
        close_socket(self.sock)
        self.pinger.close()


def fuzz_one(target: FuzzTarget, valid: list[list[bytes]], rng: random.Random, limit: int, oversize: bool) -> None:
    """One frame (two for a reused id) at ``target``, its reply classified, then a ping."""
    base = rng.choice(valid)
    if oversize:
        frames, wait_s = oversized(base, limit, whole=rng.random() < 0.5), 3.0
    else:
        kind = rng.choice(KINDS)
        frames, wait_s = (mutate(kind, base, rng), 15.0) if kind != "reused_id" else (None, 15.0)
        if kind == "reused_id":
            _reused_id(target, valid, rng)
    if frames is not None:
        target.stats["replies"][target.classify(target.send(frames, wait_s))] += 1
    target.alive()


def _reused_id(target: FuzzTarget, valid: list[list[bytes]], rng: random.Random) -> None:
    """Two different requests under one message id: the second must get its own reply, not the first's."""
    first, second = rng.sample(valid, 2)
    msg_id = f"reused-{rng.getrandbits(32):08x}"
    replies = []
    for frames in (first, second):
        header = {**json.loads(frames[0]), "id": msg_id}
        reply = target.send([json.dumps(header).encode(), frames[1]], 15.0)
        target.stats["replies"][target.classify(reply)] += 1
        replies.append(reply)
    target.stats["stale"] += replies[0] is not None and replies[0] == replies[1]


@contextmanager
def fuzz_servers(model: Path, folder: Path, secure: bool) -> Iterator[dict[str, FuzzTarget]]:
    """A student and an auditor (tiny model) started as real processes, CURVE (keys in ``folder``) or ``--insecure``.

    Not waited for: ping them (``_wait_for_ping``) before sending anything.
    """
    opts = LaunchConfig(run_dir=folder, model=str(model), device="cpu", threads=1, limit=LIMIT)
    files = write_role_configs(role_configs(opts), folder / "config")
    create_role_keys(folder / "keys")
    create_signing_key(folder / "keys")
    ports = free_tcp_ports(2)
    endpoints = {"student": f"tcp://127.0.0.1:{ports[0]}", "auditor": f"tcp://127.0.0.1:{ports[1]}"}
    commands = role_commands(opts, files, endpoints["student"], endpoints["auditor"])
    if not secure:
        commands = {role: _insecure(argv) for role, argv in commands.items()}
    channels = {"student": STUDENT_CHANNEL, "auditor": AUDITOR_CHANNEL}
    with ProcessGroup() as group:
        targets = {}
        for role in ("student", "auditor"):
            group.spawn(role, commands[role], folder / f"{role}.log")
            security = client_security(folder / "keys", "teacher", role) if secure else None
            targets[role] = FuzzTarget(role, endpoints[role], channels[role], group.procs[role], security, "teacher")
        try:
            yield targets
        finally:
            for target in targets.values():
                target.close()


def _insecure(argv: list[str]) -> list[str]:
    """A role's command with ``--insecure`` in place of ``--keys DIR``."""
    i = argv.index("--keys")
    return [*argv[:i], "--insecure", *argv[i + 2 :]]


def resumable_fuzz_run(model: Path, work: Path, frames: int, rng: random.Random, deadline_s: float) -> dict[str, Any]:
    """:func:`fuzz_run`, kept in ``work/fuzz.json`` once finished: a rerun with the same --work reuses it."""
    saved = work / "fuzz.json"
    if saved.exists():
        return json.loads(saved.read_text())
    fuzz = fuzz_run(model, work, frames, rng, deadline_s)
    saved.write_text(json.dumps(fuzz))
    return fuzz


def fuzz_run(model: Path, work: Path, frames: int, rng: random.Random, deadline_s: float) -> dict[str, Any]:
    """``frames`` frames, 80% over ``--insecure`` and 20% over CURVE with the teacher's key, half per server.

    Both pairs of servers start together (they load at the same time); the frames go to one pair, then the other.
    """
    plan = {"insecure": frames - frames // 5, "curve": frames // 5}
    started, results = time.monotonic(), {}
    with ExitStack() as stack:
        pairs = {
            mode: stack.enter_context(fuzz_servers(model, work / f"fuzz-{mode}", mode == "curve")) for mode in plan
        }
        for target in (t for targets in pairs.values() for t in targets.values()):
            _wait_for_ping(target.endpoint, target.channel, "teacher", target.security)
        for mode, targets in pairs.items():
            with RssSampler(lambda t=targets: {n: t[n].proc.pid for n in t}) as rss:
                _fuzz_targets(targets, plan[mode], rng, started + deadline_s)
            for name, target in targets.items():
                results[f"{name} ({mode})"] = _server_result(target, rss.peak_mib[name], work / f"fuzz-{mode}")
    return {"seconds": round(time.monotonic() - started, 1), "servers": results}


def _server_result(target: FuzzTarget, peak_mib: float, folder: Path) -> dict[str, Any]:
    """A fuzzed server's counts, its peak RSS and the tracebacks its log holds (handled errors, logged)."""
    log = f"{target.name}.log"
    logged = [t for t in _tracebacks(folder, dict.fromkeys(_logs(), 0)) if t["log"] == log]
    crashed = target.stats["crashed"] or target.proc.poll() is not None
    return {
        **target.stats,
        "crashed": crashed,
        "replies": dict(target.stats["replies"]),
        "peak_rss_mib": peak_mib,
        "tracebacks": logged,
    }


def _fuzz_targets(targets: dict[str, FuzzTarget], count: int, rng: random.Random, deadline: float) -> None:
    """Alternate frames between the servers until ``count`` are sent, a server is down, or the deadline."""
    valid = {name: valid_frames(t.channel, "teacher") for name, t in targets.items()}
    oversize_every = max(25, count // 20)  # a handful of 64 MiB frames per server, not thousands
    for i in range(count):
        target = targets[("student", "auditor")[i % 2]]
        if target.stats["crashed"] or time.monotonic() > deadline:
            continue
        fuzz_one(
            target,
            valid[target.name],
            rng,
            DEFAULT_MAX_MESSAGE_BYTES,
            oversize=(i // 2) % oversize_every == oversize_every - 1,
        )


# --------------------------------------------------------------------------- report


def summarise(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per role: the sums over its trials."""
    rows = []
    for role in ROLES:
        mine = [t for t in trials if t["role"] == role]
        if not mine:
            continue
        rows.append(
            {
                "role": role,
                "trials": len(mine),
                "kills landed": sum(bool(t["kill_landed"]) for t in mine),
                "resumed": sum(t["resumed"] for t in mine),
                "lost": sum(t["lost"] for t in mine),
                "orphaned": sum(t["orphaned"] for t in mine),
                "duplicates": sum(t["duplicates"] for t in mine),
                "promoted": sum(bool(t.get("promoted")) for t in mine),
                "unaudited": sum(t["unaudited_promotions"] for t in mine),
                "crashes": sum(crashes(t["tracebacks"]) for t in mine),
                "handled errors": sum(len(t["tracebacks"]) - crashes(t["tracebacks"]) for t in mine),
                "hangs": sum(t["hangs"] for t in mine),
                "peak RSS MiB": max(max(t["peak_rss_mib"].values(), default=0) for t in mine),
                "ledger verified": sum(t["ledger_verified"] for t in mine),
            }
        )
    return rows


def fuzz_rows(fuzz: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, s in fuzz["servers"].items():
        replies = ", ".join(f"{k} {v}" for k, v in sorted(s["replies"].items(), key=lambda kv: -kv[1]))
        rows.append(
            {
                "server": name,
                "frames": s["frames"],
                "crashes": int(s["crashed"]) + crashes(s["tracebacks"]),
                "handled errors": len(s["tracebacks"]) - crashes(s["tracebacks"]),
                "hangs": s["hangs"],
                "stale replies": s["stale"],
                "peak RSS MiB": s["peak_rss_mib"],
                "replies": replies,
            }
        )
    return rows


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    out = Table(title=title)
    for column in rows[0] if rows else []:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(str(v) for v in row.values()))
    return out


def markdown(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, console: Console) -> None:
    """Print both tables; write faults.json (everything) and faults.md (tables, command, wall time)."""
    faults, fuzz = summarise(report["trials"]), fuzz_rows(report["fuzz"])
    console.print(table("Fault matrix: kill -9 one role mid-pass, then resume", faults))
    console.print(table("Fuzz run: one frame at a time, each followed by a ping", fuzz))
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = [
        f"# Faults bench (#15)\n\n`{report['command']}`\n\nwall time {report['wall_s']:.0f} s, seed {report['seed']}\n",
        markdown("Fault matrix: kill -9 one role mid-pass, then resume", faults),
        markdown("Fuzz run: one frame at a time, each followed by a ping", fuzz),
        COLUMNS_MD,
    ]
    (out / "faults.md").write_text("\n".join(text))
    console.print(f"wall time {report['wall_s']:.0f} s; wrote {out / 'faults.json'} and {out / 'faults.md'}")


COLUMNS_MD = """Columns: *kills landed*: the role was still running at the kill point (else the pass outran it);
*resumed*: the rerun with `--run-dir` finished every context; *lost*: verdicts the teacher received that the
ledger lacks or contradicts (or that vanished from results.jsonl); *orphaned*: accepted ledger verdicts of an
unfinished context that the resumed pass did not re-judge to the same verdict; *duplicates*: two ledger
verdicts on one (adapter, self-edit); *promoted*: `seal promote` of an accepted adapter succeeded (a rejected
one is refused); *unaudited*: registry promotions without a valid signed accepting verdict in the ledger;
*crashes*: a server process that exited (fuzz) or a traceback a role died of;
*handled errors*: tracebacks a role logged (`log.exception`) while it turned the failure into a typed `internal`
reply and served on (e.g. the auditor's call to a killed student); *hangs*: a pass over its bound (fault matrix)
or a ping unanswered within 5 s after a frame (fuzz); *stale replies*: a reused message id answered with another
request's cached reply; *ledger verified*: `seal ledger verify --keys` passed at the end.
"""


# --------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials per role and 1,000 frames (minutes).")
    parser.add_argument("--trials", type=int, help="Trials per role (default 20; 3 with --quick).")
    parser.add_argument("--frames", type=int, help="Fuzz frames (default 10,000; 1,000 with --quick).")
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES), help="The roles to kill.")
    parser.add_argument("--parallel", type=int, default=2, help="Fault trials run at the same time.")
    parser.add_argument(
        "--promote-every", type=int, help="seal promote in every N-th trial of a role (default 1; 3 with --quick)."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults")
    parser.add_argument(
        "--work", type=Path, help="Where run folders go (default: a temporary folder); a rerun with it resumes."
    )
    parser.add_argument("--pass-bound-s", type=float, default=300.0, help="A demo pass running longer is a hang.")
    parser.add_argument("--fuzz-bound-s", type=float, default=900.0, help="Stop fuzzing after this many seconds.")
    parser.add_argument("--work-s", type=float, help="Kill window while working (default: from a reference pass).")
    parser.add_argument("--startup-s", type=float, default=10.0, help="Kill window at start-up, with --work-s.")
    args = parser.parse_args(argv)
    args.trials = args.trials if args.trials is not None else (3 if args.quick else 20)
    args.promote_every = args.promote_every or (3 if args.quick else 1)
    args.frames = args.frames if args.frames is not None else (1000 if args.quick else 10_000)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the fault matrix and the fuzz run; print and write the report; return it."""
    args = parse_args(argv)
    logging.getLogger("protocol.transport").setLevel(logging.ERROR)  # start-up pings' "reconnecting" lines
    command = "python -m bench.faults " + shlex.join(sys.argv[1:] if argv is None else argv)
    started, rng = time.monotonic(), random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="seal-faults-") as tmp:
        work = args.work or Path(tmp)
        model = build_tiny_model(work / "tiny-model")
        trials = fault_matrix(model, work, args, rng) if args.trials else []
        fuzz = resumable_fuzz_run(model, work, args.frames, rng, args.fuzz_bound_s) if args.frames else {"servers": {}}
    report = {
        "command": command,
        "seed": args.seed,
        "wall_s": round(time.monotonic() - started, 1),
        "summary": summarise(trials),
        "trials": trials,
        "fuzz": fuzz,
    }
    write_report(report, args.out, Console(width=None if sys.stdout.isatty() else 200))
    return report


if __name__ == "__main__":
    main()
