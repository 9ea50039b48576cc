"""Inner-loop speed: candidates fully judged per hour, batched seal against a TRL + peft baseline.

Run from the repository root (needs the ``bench`` extra: ``pip install -e '.[bench]'``):

    python -m bench.inner_loop               # K = 1, 2, 5, 10; 1 passage; 10 epochs (the paper's)
    python -m bench.inner_loop --quick       # K = 1, 2, 5; 2 epochs: a few minutes on 2 CPU cores
    python -m bench.inner_loop --shape bench/shapes/qwen2.5-7b.json --device cuda --data FILE  # random 7B weights
    python -m bench.inner_loop --workers 1,2 --ks 5,10,20 --dtypes float32,bfloat16 --data FILE  # the whole machine

A candidate is *fully judged* when it is trained, has answered τ and the retention questions,
and its gold-answer and retention likelihoods are scored. The batched path is the product:
``Student.apply_self_edits`` (all K candidates of a passage trained together) and
``Auditor.judge`` (answers from one mixed-adapter generation, likelihoods from one mixed
forward). The baseline is the recipe a user would write with well-known tools: per candidate a
fresh peft LoRA trained by TRL's ``SFTTrainer`` on the same sequences with the same
hyperparameters and number of optimizer steps, then plain ``generate`` per question set and a
plain forward for the likelihoods. The base model's answers and likelihoods are computed once,
before timing, on both sides; the auditor's safety probes are switched off (the baseline has none).

On CUDA the matmul reference is the device's own bf16 (or the run's dtype) rate, timed between
``torch.cuda.synchronize`` calls in the same run, and memory is the peak the CUDA allocator held
(``torch.cuda.max_memory_allocated``) over each side's timed run, all models in this process included.

``--workers 1,2``: the product's student and auditor each hand their compute to N Ray actors
(:mod:`library.ray_pool`; 1: in this process, no Ray), ``--threads`` torch threads each; the seal
side's CPU time then includes the workers', and each worker's peak resident memory is reported. The
baseline runs once per ``--baseline-threads`` setting: torch's default threads (what a user's script
gets) and one thread. ``--dtypes float32,bfloat16`` runs both sides in each dtype; bfloat16 only on a
GPU or on a CPU with native bf16 (AVX512-BF16 or AMX), else it is skipped and noted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from auditor.config import AuditorConfig
from auditor.service import Auditor
from library.datasets import QAItem, load_contexts, load_questions, load_recorded_self_edits, load_retention
from library.models import DEFAULT_MODEL, DTYPE_CHOICES, DTypeName, load_model
from library.qa_format import clean_answer, question_prompt
from library.stacked_lora import target_module_names
from protocol.clients import student_in_process
from protocol.messages import (
    ApplySelfEdits,
    CandidateToJudge,
    Context,
    JudgeCandidates,
    SelfEdit,
    TrainConfig,
    TrainJob,
)
from student.config import StudentConfig
from student.service import Student
from student.training import lora_config, tokenize_texts, training_schedule, training_texts

RESULTS = Path(__file__).with_name("results")
console = Console(width=200)


@dataclass
class Workload:
    """One passage, its τ, and its self-edits as training jobs (one completion per candidate)."""

    context: Context
    tau: list[QAItem]
    jobs: list[TrainJob]


@dataclass
class Phase:
    """Timings of one run over some candidates."""

    candidates: int = 0
    train_s: float = 0.0
    judge_s: float = 0.0
    train_flops: float = 0.0
    peak_rss_gib: float = 0.0
    rss_rise_gib: float = 0.0
    peak_gpu_gib: float = 0.0
    worker_peak_rss_gib: float = 0.0  # the largest peak resident memory of one Ray worker (0: no workers)
    load: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    cpu_s: float = 0.0  # process CPU time: robust to other processes' load when torch runs one thread

    @property
    def per_hour(self) -> float:
        return 3600 * self.candidates / (self.train_s + self.judge_s)

    @property
    def per_cpu_hour(self) -> float:
        return 3600 * self.candidates / self.cpu_s

    def add(self, other: Phase) -> None:
        self.candidates += other.candidates
        self.train_s += other.train_s
        self.judge_s += other.judge_s
        self.train_flops += other.train_flops
        self.cpu_s += other.cpu_s
        self.steps += other.steps


# --------------------------------------------------------------------------- measuring


def matmul_gflops(
    size: int | None = None, seconds: float = 2.0, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> float:
    """This device's matmul rate in ``dtype`` now (GFLOP/s), from repeated ``size``-square products.

    ``size`` defaults to 2048 on a CPU and 8192 on CUDA (what it takes to keep a large GPU's tensor
    cores busy). On CUDA the products are queued in rounds and the clock is read after
    ``torch.cuda.synchronize``, so it times the kernels, not their launches.
    """
    cuda = torch.device(device).type == "cuda"
    size = size or (8192 if cuda else 2048)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    per_round = 10 if cuda else 1
    _sync(device)
    a @ b  # warm-up
    _sync(device)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs == 0:
        for _ in range(per_round):
            a @ b
        _sync(device)
        runs += per_round
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


def _sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so a clock read after it is honest."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_gpu(phase: Phase) -> Iterator[None]:
    """Record the CUDA allocator's peak over the block (GiB; 0 without CUDA)."""
    if not torch.cuda.is_available():
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        torch.cuda.synchronize()
        phase.peak_gpu_gib = torch.cuda.max_memory_allocated() / 2**30


@contextmanager
def peak_rss(phase: Phase) -> Iterator[None]:
    """Record the peak resident memory over the block, and its rise over the RSS at the start (GiB).

    Linux: writing 5 to /proc/self/clear_refs resets the high-water mark VmHWM to the current RSS.
    """
    with suppress(OSError):  # a sandboxed kernel (gVisor) may refuse it: the peak is then the process's so far
        Path("/proc/self/clear_refs").write_text("5")
    idle = _status_kib("VmRSS")
    try:
        yield
    finally:
        phase.peak_rss_gib = _status_kib("VmHWM") / 2**20
        phase.rss_rise_gib = phase.peak_rss_gib - idle / 2**20


def _status_kib(key: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(f"{key}:"))


def train_flops_per_token(model: torch.nn.Module, settings: TrainConfig) -> float:
    """Useful training FLOPs per token: frozen base 4·P (forward + input gradients), LoRA 6·P_lora.

    P counts every linear layer's weights including the output head; attention's own products
    (a few % at these lengths) are left out, as are padded positions.
    """
    dense = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 4 * dense + 6 * lora_parameters(model, settings)


def lora_parameters(model: torch.nn.Module, settings: TrainConfig) -> int:
    """Trainable parameters of one candidate."""
    names = target_module_names(model, settings.target_modules)
    modules = dict(model.named_modules())
    return sum(settings.rank * (modules[n].in_features + modules[n].out_features) for n in names)


def tokens_trained(tokenizer: Any, job: TrainJob, settings: TrainConfig) -> int:
    """Real (unpadded) tokens a candidate's training passes over, all epochs."""
    sequences = tokenize_texts(tokenizer, training_texts(job, settings), settings.max_length)
    return sum(len(sequences[i]) for step in training_schedule(len(sequences), settings) for i in step.indices)


def steps_of(job: TrainJob, settings: TrainConfig) -> int:
    return len(training_schedule(len(training_texts(job, settings)), settings))


# --------------------------------------------------------------------------- data


def load_workloads(data: Path, contexts: int, k_max: int) -> list[Workload]:
    """The first ``contexts`` passages with recorded self-edits, ``k_max`` completions each."""
    recorded = load_recorded_self_edits(data, limit=contexts)
    questions = load_questions(data, limit=contexts)
    workloads = []
    for context in load_contexts(data, limit=contexts):
        completions = recorded[context.context_id].completions[:k_max]
        if len(completions) < k_max:
            raise SystemExit(f"{data}: passage {context.context_id} has only {len(completions)} self-edits")
        jobs = [
            TrainJob(
                context=context,
                self_edit=SelfEdit(
                    self_edit_id=f"{context.context_id}-{k}",
                    context_id=context.context_id,
                    format="recorded",
                    text=text,
                    prompt=recorded[context.context_id].prompt or "",
                    teacher_model="recorded",
                    teacher_version="recorded",
                ),
            )
            for k, text in enumerate(completions)
        ]
        workloads.append(Workload(context, questions[context.context_id], jobs))
    return workloads


# --------------------------------------------------------------------------- the baseline: TRL + peft, one by one


@torch.no_grad()
def plain_answers(model: Any, tokenizer: Any, questions: list[str], max_new_tokens: int) -> list[str]:
    """One left-padded ``generate`` call for a question set."""
    batch = tokenizer([question_prompt(tokenizer, q) for q in questions], return_tensors="pt", padding=True)
    batch = batch.to(model.device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return [clean_answer(t) for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], True)]


@torch.no_grad()
def plain_logliks(model: Any, tokenizer: Any, pairs: list[tuple[str, str]]) -> list[float]:
    """One right-padded forward over all pairs; mean log-prob of each answer's tokens."""
    rows, spans = [], []
    for question, answer in pairs:
        prompt = tokenizer(question_prompt(tokenizer, question), add_special_tokens=False)["input_ids"]
        rows.append(prompt + tokenizer(answer.strip() or " ", add_special_tokens=False)["input_ids"])
        spans.append((len(prompt), len(rows[-1])))
    ids = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_token_id)  # (B, T)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    logprobs = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # (B, T, V)
    return [logprobs[i, b - 1 : e - 1].gather(-1, ids[i, b:e, None]).mean().item() for i, (b, e) in enumerate(spans)]


def sft_config(settings: TrainConfig, workdir: str) -> Any:
    """SFTTrainer's defaults, changed only where they would change the math or add recomputation."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=workdir,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",  # seal trains at a constant rate
        optim="adamw_torch",  # the same AdamW
        weight_decay=0.0,
        max_grad_norm=0.0,  # seal does not clip
        max_length=settings.max_length,
        gradient_checkpointing=False,  # recomputation would cost the baseline a third more
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        seed=settings.seed,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
    )


def baseline_candidate(
    model: Any, tokenizer: Any, work: Workload, job: TrainJob, settings: TrainConfig, base_retention: list[str]
) -> Phase:
    """Train one candidate with SFTTrainer, answer τ and the retention set, score both; then unload it."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTTrainer

    retention = load_retention()
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as workdir:
        trainer = SFTTrainer(
            model=model,
            args=sft_config(settings, workdir),
            train_dataset=Dataset.from_dict({"text": training_texts(job, settings)}),
            processing_class=tokenizer,
            peft_config=lora_config(settings, "baseline"),
        )
        trainer.remove_callback(PrinterCallback)  # it prints the metrics dict even with logging off
        trainer.train()
    _sync(model.device)
    trained = time.perf_counter()
    peft_model = trainer.model.eval()
    plain_answers(peft_model, tokenizer, [q.question for q in work.tau], ANSWER_TOKENS)
    plain_answers(peft_model, tokenizer, [q.question for q in retention], ANSWER_TOKENS)
    plain_logliks(peft_model, tokenizer, [(q.question, a) for q in work.tau for a in q.answers])
    plain_logliks(peft_model, tokenizer, [(q.question, a) for q, a in zip(retention, base_retention, strict=True)])
    _sync(model.device)
    judged, cpu = time.perf_counter(), time.process_time() - cpu
    steps = trainer.state.global_step
    peft_model.unload()
    del trainer, peft_model
    gc.collect()
    flops = tokens_trained(tokenizer, job, settings) * train_flops_per_token(model, settings)
    return Phase(1, trained - started, judged - trained, flops, cpu_s=cpu, steps=[steps])


def run_baseline(
    model: Any, tokenizer: Any, workloads: list[Workload], settings: TrainConfig, k_max: int
) -> list[list[Phase]]:
    """Per passage, per self-edit: the baseline's timings."""
    retention = [q.question for q in load_retention()]
    results = []
    for work in workloads:
        base_retention = plain_answers(model, tokenizer, retention, ANSWER_TOKENS)  # cached once, untimed
        row = []
        for k, job in enumerate(work.jobs[:k_max]):
            phase = baseline_candidate(model, tokenizer, work, job, settings, base_retention)
            if phase.steps != [steps_of(job, settings)]:
                raise SystemExit(f"baseline ran {phase.steps} optimizer steps, seal runs {steps_of(job, settings)}")
            console.log(f"baseline {k + 1}/{k_max}: train {phase.train_s:.1f}s, judge {phase.judge_s:.1f}s")
            row.append(phase)
        results.append(row)
    return results


# --------------------------------------------------------------------------- the batched path: the product


WARM_UP_SEED = 10_000  # the warm-up's candidates are none of a timed phase's (seeds 1, 2, 5, ...)


def product_roles(
    spec: str,
    dtype: DTypeName,
    data: Path,
    contexts: int,
    settings: TrainConfig,
    root: Path,
    device: str = "auto",
    workers: int = 1,
    threads: int = 1,
) -> tuple[Student, Auditor]:
    """A student and an auditor in this process, sharing a store; no safety probes.

    With ``workers`` above 1, each hands its compute to that many Ray actors of ``threads`` torch threads,
    in one local runtime with room for both pools.
    """
    (root / "probes.json").write_text("[]")
    pools = {"workers": workers, "threads_per_worker": threads, "ray_num_cpus": 2 * workers * threads}
    pools = pools if workers > 1 else {}
    student = Student(
        StudentConfig(model=spec, device=device, dtype=dtype, store=root / "store", train=settings, **pools)
    )
    auditor = Auditor(
        AuditorConfig(
            data=data,
            limit=contexts,
            model=spec,
            device=device,
            dtype=dtype,
            store=root / "store",
            ledger=root / "ledger.jsonl",
            probes=root / "probes.json",
            answer_tokens=ANSWER_TOKENS,
            **pools,
        ),
        student_in_process(student.handle, sender="auditor"),
    )
    return student, auditor


def run_batched(student: Student, auditor: Auditor, workloads: list[Workload], k: int) -> Phase:
    """All K candidates of each passage trained together, then judged together."""
    phase = Phase(load=list(os.getloadavg()))
    settings = student.config.train
    per_token = train_flops_per_token(student.model, settings)
    pools = [role.workers.pool for role in (student, auditor) if role.workers is not None]
    workers_cpu = sum(cpu for pool in pools for cpu, _ in pool.usage(reset_peak=True))
    with peak_rss(phase), peak_gpu(phase):
        for work in workloads:
            jobs = phase_jobs(work.jobs[:k], settings, k)
            started, cpu = time.perf_counter(), time.process_time()
            trained = student.apply_self_edits(ApplySelfEdits(jobs=jobs)).candidates
            mid = time.perf_counter()
            items = [CandidateToJudge(self_edit=j.self_edit, candidate=c) for j, c in zip(jobs, trained, strict=True)]
            auditor.judge(JudgeCandidates(context_id=work.context.context_id, candidates=items))
            flops = sum(tokens_trained(student.tokenizer, j, settings) for j in jobs) * per_token
            cpu = time.process_time() - cpu
            phase.add(
                Phase(k, mid - started, time.perf_counter() - mid, flops, cpu_s=cpu, steps=[c.steps for c in trained])
            )
    phase.load += list(os.getloadavg())
    usage = [u for pool in pools for u in pool.usage()]
    phase.cpu_s += sum(cpu for cpu, _ in usage) - workers_cpu  # the workers' CPU time is the seal side's too
    phase.worker_peak_rss_gib = max((peak for _, peak in usage), default=0.0)
    return phase


def phase_jobs(jobs: list[TrainJob], settings: TrainConfig, phase_seed: int) -> list[TrainJob]:
    """The jobs with a seed of this phase's own: the auditor judges a candidate once (a repeated one gets its
    recorded verdict back), so a phase repeating an earlier phase's adapters would time cached verdicts."""
    unique = (settings if j.settings is None else j.settings for j in jobs)
    return [
        j.model_copy(update={"settings": s.model_copy(update={"seed": s.seed + phase_seed})})
        for j, s in zip(jobs, unique, strict=True)
    ]


def warm_up(student: Student, auditor: Auditor, workloads: list[Workload]) -> None:
    """First calls pay one-off costs (imports, kernel set-up): a 1-epoch candidate per passage, untimed.

    The product judges one per passage through ``Auditor.judge``, as a run does: the base model's answers
    and likelihoods for that passage are computed then, once, and cached for the timed calls.
    :func:`warm_up_baseline` does the same for the baseline.
    """
    short = TrainConfig(epochs=1)
    for w in workloads:
        [job] = phase_jobs([w.jobs[0]], short, WARM_UP_SEED)
        trained = student.apply_self_edits(ApplySelfEdits(jobs=[job])).candidates
        items = [CandidateToJudge(self_edit=job.self_edit, candidate=trained[0])]
        auditor.judge(JudgeCandidates(context_id=w.context.context_id, candidates=items))


def warm_up_baseline(model: Any, tokenizer: Any, workloads: list[Workload]) -> None:
    """One 1-epoch baseline candidate, untimed: TRL's and the kernels' one-off costs."""
    short = TrainConfig(epochs=1)
    work = workloads[0]
    job = work.jobs[0].model_copy(update={"settings": short})
    retention = [q.question for q in load_retention()]
    baseline_candidate(model, tokenizer, work, job, short, plain_answers(model, tokenizer, retention, 4))


# --------------------------------------------------------------------------- report


COLUMNS = [
    ("dtype", "dtype"),
    ("workers", "workers"),
    ("K", "k"),
    ("seal cand/h", "seal_per_hour"),
    ("baseline cand/h", "baseline_per_hour"),
    ("ratio", "ratio"),
    ("baseline 1-thread cand/h", "baseline_1t_per_hour"),
    ("ratio to 1-thread", "ratio_1t"),
    ("seal cand/CPU-h", "seal_per_cpu_hour"),
    ("baseline cand/CPU-h", "baseline_per_cpu_hour"),
    ("CPU ratio", "cpu_ratio"),
    ("seal train s", "seal_train_s"),
    ("seal judge s", "seal_judge_s"),
    ("baseline train s", "baseline_train_s"),
    ("baseline judge s", "baseline_judge_s"),
    ("seal train FLOP/s % of matmul", "seal_flops_pct"),
    ("baseline train FLOP/s % of matmul", "baseline_flops_pct"),
    ("seal peak RSS GiB", "seal_peak_rss_gib"),
    ("seal peak RSS GiB per worker", "seal_worker_peak_rss_gib"),
    ("baseline peak RSS GiB", "baseline_peak_rss_gib"),
    ("seal peak GPU GiB", "seal_peak_gpu_gib"),
    ("baseline peak GPU GiB", "baseline_peak_gpu_gib"),
]


def report(
    args: argparse.Namespace, command: str, rows: list[dict[str, Any]], machine: dict[str, Any], show: bool = True
) -> None:
    """Save the table (markdown and JSON) with the command that produced it; print it if ``show``."""
    model = f"a random {args.shape.stem} shape" if args.shape else args.model
    where = f" on {machine.get('gpu', machine['device'])}"
    dtypes = ", ".join(machine.get("per_dtype") or [machine.get("dtype", "no dtype run")])
    table = Table(title=f"Inner loop, {model} in {dtypes}{where}: candidates fully judged per hour")
    for header, _ in COLUMNS:
        table.add_column(header, justify="right")
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_fmt(row[key]) for _, key in COLUMNS]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    if show:
        console.print(table)
    notes = [f"- {key}: {json.dumps(value)}" for key, value in machine.items()]
    notes.append("- cand/h: wall clock; cand/CPU-h: process CPU time, which with --threads 1 does not depend on load")
    notes.append("- baseline: torch's default threads (machine torch_default_threads); baseline 1-thread: one thread")
    notes.append("- seal with workers: CPU time and peak RSS include the Ray workers (peak per worker: the largest)")
    stem = args.out / (args.name or ("inner_loop_quick" if args.quick else "inner_loop"))
    args.out.mkdir(parents=True, exist_ok=True)
    # Suffixes appended, not swapped: a name such as inner_loop_qwen2.5-7b has a dot of its own.
    stem.parent.joinpath(f"{stem.name}.md").write_text(f"`{command}`\n\n" + "\n".join([*lines, "", *notes]) + "\n")
    saved = {"command": command, "rows": rows, "machine": machine}
    stem.parent.joinpath(f"{stem.name}.json").write_text(json.dumps(saved, indent=2))
    if show:
        console.print(f"saved {stem}.md and {stem}.json")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def result_row(k: int, seal: Phase, base: Phase | None, matmul_gflops_peak: float) -> dict[str, Any]:
    """One K's comparison; FLOP/s as a share of the machine's measured matmul rate in the run's dtype.

    Without a baseline (``--baseline-k 0``) its columns are None.
    """
    row = {
        "k": k,
        "seal_per_hour": seal.per_hour,
        "seal_per_cpu_hour": seal.per_cpu_hour,
        "seal_train_s": seal.train_s,
        "seal_judge_s": seal.judge_s,
        "seal_flops_pct": 100 * seal.train_flops / seal.train_s / (matmul_gflops_peak * 1e9),
        "seal_rss_rise_gib": seal.rss_rise_gib,
        "seal_peak_rss_gib": seal.peak_rss_gib,
        "seal_peak_gpu_gib": seal.peak_gpu_gib,
        "seal_worker_peak_rss_gib": seal.worker_peak_rss_gib,
        "seal_steps": seal.steps,
        "seal_load_before_after": seal.load,
    }
    keys = ["per_hour", "per_cpu_hour", "train_s", "judge_s", "rss_rise_gib", "peak_rss_gib", "peak_gpu_gib", "steps"]
    row |= {f"baseline_{key}": getattr(base, key) if base else None for key in keys}
    row["baseline_flops_pct"] = 100 * base.train_flops / base.train_s / (matmul_gflops_peak * 1e9) if base else None
    row["ratio"] = seal.per_hour / base.per_hour if base else None
    row["cpu_ratio"] = seal.per_cpu_hour / base.per_cpu_hour if base else None
    return row


# --------------------------------------------------------------------------- main

ANSWER_TOKENS = 24  # the auditor's default answer length


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Base model: the embedded default, a folder or hub id.")
    parser.add_argument(
        "--shape", type=Path, default=None, help="A shape file (bench/shapes/*.json): random weights of that size."
    )
    parser.add_argument("--shape-dir", type=Path, default=None, help="Where --shape builds its model folder.")
    parser.add_argument("--tokenizer", default=None, help="With --shape: a saved tokenizer (default: train one).")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD-format file with recorded self-edits.")
    parser.add_argument("--contexts", type=int, default=1, help="Passages to use (the first N of --data).")
    parser.add_argument("--ks", default=None, help="Comma-separated candidates per passage (default 1,2,5,10).")
    parser.add_argument(
        "--baseline-k", type=int, default=None, help="Baseline candidates per passage (default the largest K; 0: none)."
    )
    parser.add_argument("--epochs", type=int, default=None, help="Training epochs per candidate (default 10).")
    parser.add_argument("--quick", action="store_true", help="K = 1, 2, 5 and 2 epochs: a few minutes.")
    parser.add_argument("--name", default=None, help="Results file name, without suffix (default inner_loop[_quick]).")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu' or 'cuda'.")
    parser.add_argument(
        "--dtype", default="auto", choices=DTYPE_CHOICES, help="Weights' dtype, both sides (default: the device's)."
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads of seal (per Ray worker: default 1 there)."
    )
    parser.add_argument("--workers", default="1", help="Comma-separated Ray workers per role (default 1: no Ray).")
    parser.add_argument("--dtypes", default=None, help="Comma-separated dtypes, both sides in each (default --dtype).")
    parser.add_argument(
        "--baseline-threads",
        default=None,
        help="Comma-separated torch threads of the baseline runs, 'default': torch's (default: seal's --threads).",
    )
    parser.add_argument("--matmul-seconds", type=float, default=2.0, help="How long to time the matmul reference.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Folder for the results (default bench/results).")
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in (args.ks or ("1,2,5" if args.quick else "1,2,5,10")).split(",")]
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.baseline_k = max(args.ks) if args.baseline_k is None else args.baseline_k
    args.workers = [int(w) for w in args.workers.split(",")]
    args.dtypes = args.dtypes.split(",") if args.dtypes else [args.dtype]
    threads = args.baseline_threads.split(",") if args.baseline_threads else [str(args.threads or "default")]
    args.baseline_threads = [None if t == "default" else int(t) for t in threads]  # None: torch's default
    return args


def main(argv: list[str] | None = None) -> None:
    """Per dtype: warm up, run the baselines, then the batched path per number of workers and K; print and save.

    The table is saved after each K, so a run stopped by a time limit keeps the Ks it finished. A K
    that runs out of GPU memory ends that dtype and number of workers there (``machine["out_of_memory_at_k"]``).
    """
    args = parse_args(argv)
    command = "python -m bench.inner_loop " + shlex.join(sys.argv[1:] if argv is None else argv)
    console.print(f"[bold]$ {command}")
    _quiet_libraries()
    default_threads = torch.get_num_threads()  # torch's own choice, what a user's script gets
    if args.shape:
        args.model = str(_shape_folder(args))
    settings = TrainConfig(epochs=args.epochs)
    machine: dict[str, Any] = {"load_at_start": list(os.getloadavg()), "cpu_count": os.cpu_count()}
    machine |= {"torch_default_threads": default_threads, "torch_threads": args.threads or default_threads}
    machine |= {"settings": settings.model_dump(), "contexts": args.contexts, "baseline_threads": args.baseline_threads}
    machine |= {"workers": args.workers, "per_dtype": {}}
    rows: list[dict[str, Any]] = []
    for dtype in args.dtypes:
        if not native_dtype(dtype, args.device):
            machine.setdefault("skipped", []).append(f"{dtype}: this CPU has no native support (AVX512-BF16 or AMX)")
            continue
        rows += _run_dtype(args, command, dtype, settings, machine, rows, default_threads)
    machine["load_at_end"] = list(os.getloadavg())
    report(args, command, rows, machine)


def native_dtype(dtype: str, device: str) -> bool:
    """Whether ``dtype`` runs natively: always but bfloat16 on a CPU without AVX512-BF16 or AMX."""
    if dtype != "bfloat16" or (device != "cpu" and torch.cuda.is_available()):
        return True
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _run_dtype(
    args: argparse.Namespace,
    command: str,
    dtype: DTypeName,
    settings: TrainConfig,
    machine: dict[str, Any],
    done: list[dict[str, Any]],
    default_threads: int,
) -> list[dict[str, Any]]:
    """One dtype's rows: its baselines (one per thread setting), then seal per number of workers and K."""
    model, tokenizer = load_model(args.model, device=args.device, dtype=dtype)  # the baseline's own copy
    described = _describe_device(model, args)
    machine["per_dtype"][described["dtype"]] = described
    if len(machine["per_dtype"]) == 1:
        machine |= described  # the first dtype's description at the top, as a one-dtype run has it
    rate = described["matmul_gflops_start"]
    console.log(f"load {os.getloadavg()}, {described['dtype']} matmul {rate:.1f} GFLOP/s on {model.device}")
    workloads = load_workloads(args.data, args.contexts, max(args.ks))
    machine["adapter_and_optimizer_mib_per_candidate"] = 16 * lora_parameters(model, settings) / 2**20
    machine["tokens_trained_per_candidate"] = [tokens_trained(tokenizer, j, settings) for j in workloads[0].jobs]
    baselines = {}
    for threads in args.baseline_threads:
        torch.set_num_threads(threads or default_threads)
        baselines[threads] = _timed_baseline(model, tokenizer, workloads, settings, args.baseline_k, described)
    torch.set_num_threads(args.threads or default_threads)
    rows: list[dict[str, Any]] = []
    for workers in args.workers:
        for k, seal in _seal_phases(args, dtype, settings, workloads, workers, described):
            row = {"dtype": described["dtype"], "workers": workers}
            row |= result_row(k, seal, _baseline_at(baselines, args.baseline_threads[0], k), rate)
            one = _baseline_at(baselines, 1, k)
            row["baseline_1t_per_hour"] = one.per_hour if one else None
            row["ratio_1t"] = seal.per_hour / one.per_hour if one else None
            rows.append(row)
            report(args, command, [*done, *rows], machine, show=False)  # kept if a time limit stops the run
    described["matmul_gflops_end"] = matmul_gflops(seconds=args.matmul_seconds, dtype=model.dtype, device=model.device)
    if len(machine["per_dtype"]) == 1:
        machine |= described  # with what the runs added (baseline error, out of memory at K, end rate)
    peak = max(rate, described["matmul_gflops_end"])
    del model
    gc.collect()
    return [_rescored(row, rate, peak) for row in rows]


def _seal_phases(
    args: argparse.Namespace,
    dtype: DTypeName,
    settings: TrainConfig,
    workloads: list[Workload],
    workers: int,
    machine: dict[str, Any],
) -> Iterator[tuple[int, Phase]]:
    """The product's timed run at each K, with ``workers`` Ray workers per role (1: in this process)."""
    with tempfile.TemporaryDirectory() as root:
        student, auditor = product_roles(
            args.model, dtype, args.data, args.contexts, settings, Path(root), args.device, workers, args.threads or 1
        )
        try:
            warm_up(student, auditor, workloads)
            for k in args.ks:
                seal = _batched_or_none(student, auditor, workloads, k, machine)
                if seal is None:
                    break
                yield k, seal
        finally:
            student.close()
            auditor.close()


def _baseline_at(
    baselines: dict[int | None, tuple[list[list[Phase]], Phase]], threads: int | None, k: int
) -> Phase | None:
    """The baseline run with ``threads`` over the candidates of K per passage, or None if it was not run."""
    if threads not in baselines or not baselines[threads][0]:
        return None
    baseline, whole = baselines[threads]
    return _baseline_subset(baseline, k, whole)


def _shape_folder(args: argparse.Namespace) -> Path:
    """The model folder of ``--shape``, built once (on the GPU when the run is on one)."""
    from bench.model_shapes import build_model_folder

    folder = args.shape_dir or Path(tempfile.gettempdir()) / "seal-shapes" / args.shape.stem
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    build_model_folder(args.shape, folder, args.tokenizer, args.data, device)
    console.log(f"model folder of {args.shape.name}: {folder} ({time.perf_counter() - started:.1f} s)")
    return folder


def _describe_device(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The run's dtype, device and the device's matmul rate in that dtype, measured now."""
    described: dict[str, Any] = {"dtype": str(model.dtype).removeprefix("torch."), "device": str(model.device)}
    described["attention"] = model.config._attn_implementation  # sdpa on CUDA; eager for bf16 on a CPU
    if model.device.type == "cuda":
        described["gpu"] = torch.cuda.get_device_name(model.device)
        described["gpu_memory_gib"] = torch.cuda.get_device_properties(model.device).total_memory / 2**30
    if args.shape:
        described["shape"] = str(args.shape)
    described["parameters"] = sum(p.numel() for p in model.parameters())
    rate = matmul_gflops(seconds=args.matmul_seconds, dtype=model.dtype, device=model.device)
    described["matmul_gflops_start"] = rate
    return described


def _timed_baseline(
    model: Any, tokenizer: Any, workloads: list[Workload], settings: TrainConfig, k: int, machine: dict[str, Any]
) -> tuple[list[list[Phase]], Phase]:
    """The baseline's first ``k`` candidates per passage, with the whole run's memory peaks.

    A baseline that fails (TRL or datasets missing or at odds with this transformers, say) leaves the
    run without one, its error in ``machine["baseline_error"]``: the product's own figures still count.
    """
    base_phase = Phase(load=list(os.getloadavg()))
    if k == 0:
        return [], base_phase
    try:
        warm_up_baseline(model, tokenizer, workloads)
        with peak_rss(base_phase), peak_gpu(base_phase):
            baseline = run_baseline(model, tokenizer, workloads, settings, k)
    except Exception as exc:  # any failure of the third-party stack; SystemExit (step mismatch) still ends the run
        machine["baseline_error"] = f"{type(exc).__name__}: {exc}"[:500]
        console.log(f"[red]baseline failed, the run goes on without it: {machine['baseline_error']}")
        return [], base_phase
    machine["baseline_load_before_after"] = base_phase.load + list(os.getloadavg())
    return baseline, base_phase


def _batched_or_none(
    student: Student, auditor: Auditor, workloads: list[Workload], k: int, machine: dict[str, Any]
) -> Phase | None:
    """The batched run at K, or None (noted in ``machine``) if it ran out of GPU memory."""
    try:
        phase = run_batched(student, auditor, workloads, k)
    except torch.cuda.OutOfMemoryError as exc:
        machine["out_of_memory_at_k"] = k
        console.log(f"K={k}: out of GPU memory ({str(exc).splitlines()[0]}); larger K are not run")
        gc.collect()
        torch.cuda.empty_cache()
        return None
    console.log(f"K={k}: train {phase.train_s:.1f}s, judge {phase.judge_s:.1f}s, {phase.per_hour:.0f} candidates/h")
    return phase


def _rescored(row: dict[str, Any], rate: float, peak: float) -> dict[str, Any]:
    """``row``'s FLOP/s shares against the higher of the start and end matmul rates."""
    scored = dict(row)
    for key in ("seal_flops_pct", "baseline_flops_pct"):
        if scored[key] is not None:
            scored[key] *= rate / peak
    return scored


def _quiet_libraries() -> None:
    """No per-candidate progress bars or info lines from datasets, transformers and TRL."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        import datasets
    except ImportError:  # no baseline: --baseline-k 0 runs without TRL and datasets
        return
    datasets.disable_progress_bars()


def _baseline_subset(baseline: list[list[Phase]], k: int, whole: Phase) -> Phase:
    """The baseline over the same candidates as a batched run with K per passage (memory: the whole run's).

    With fewer baseline candidates than K (``--baseline-k``), those it has: one by one, its rate per
    candidate does not depend on K.
    """
    subset = Phase(peak_rss_gib=whole.peak_rss_gib, rss_rise_gib=whole.rss_rise_gib, peak_gpu_gib=whole.peak_gpu_gib)
    for row in baseline:
        for phase in row[:k]:
            subset.add(phase)
    return subset


if __name__ == "__main__":
    main()
