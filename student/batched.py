"""Training many candidate adapters at once: one pass of the frozen base model per step serves them all.

Each candidate keeps the schedule it would have alone (:func:`student.training.training_schedule`:
the same shuffled batches, the same number of steps), its own LoRA weights (initialised as peft
would under its seed) and its own AdamW state. At step ``s`` the batches of every candidate that
still has a step ``s`` are pooled, sorted by length and cut into micro-batches that waste few
padded tokens; inside a micro-batch each candidate's rows are contiguous, and
:class:`library.stacked_lora.StackedLoRALinear` applies each candidate's LoRA to its own rows.

Each candidate's loss is its own token-mean over its own step batch (summed token losses divided
by *its* token count, never the pooled batch's), and the step's objective is the sum of these, so
each adapter's gradient is exactly the one it would get alone. One AdamW with a parameter group per
candidate is K independent AdamWs (:func:`library.training.fit`): its state is per parameter, and a
candidate that has finished has no gradient and is skipped. The result matches K sequential peft
trainings (the tests' reference) up to floating-point summation order (with dropout 0; dropout draws differ).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from library.lora import finish_adapter_config
from library.scratch import scratch_folder
from library.stacked_lora import (
    LoRAWeights,
    Routing,
    init_lora_weights,
    peft_state_dict,
    row_segments,
    stacked_layers,
    target_module_names,
)
from library.training import IGNORE_INDEX, collate, fit
from protocol.messages import TrainConfig, TrainJob
from student.training import (
    Step,
    TrainedAdapter,
    epoch_means,
    lora_config,
    tokenize_texts,
    training_schedule,
    training_texts,
)

MICROBATCH_TOKENS = 2048
"""Most padded tokens in one forward pass: bounds activation memory (about 2 MB a token for a 135M model)."""
MICROBATCH_OVERHEAD_TOKENS = 32
"""A forward pass's fixed cost counted in tokens, when deciding whether splitting a step saves work."""
MICROBATCH_ROWS = 256
"""Most sequences in one forward pass."""


@dataclass
class _Run:
    """One candidate in training."""

    slot: int
    settings: TrainConfig
    sequences: list[list[int]]
    schedule: list[Step]
    modules: list[str]
    weights: dict[str, LoRAWeights]
    anchors: range = range(0)  # indices of the anchor sequences (the last ones)
    references: dict[int, torch.Tensor] = field(default_factory=dict)  # KL anchors: index -> (len-1, V) log-probs
    step_losses: list[float] = field(default_factory=list)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for lora in self.weights.values() for p in (lora.A, lora.B)]

    def tokens_trained(self) -> int:
        return sum(len(self.sequences[i]) for step in self.schedule for i in step.indices)


def train_adapters(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    jobs: Sequence[tuple[TrainJob, TrainConfig]],
    base_model: str,
    max_tokens: int = MICROBATCH_TOKENS,
) -> list[TrainedAdapter]:
    """Train one fresh LoRA adapter per ``(job, settings)``, all together, and save each in peft format.

    Equivalent to training each job alone with peft; ``model`` is left as it was. ``seconds`` of
    each result is its share of the wall time, by tokens trained. Each adapter is saved in a folder
    of this process's :func:`library.scratch.scratch_folder`, which the caller removes once stored;
    if saving fails, none is left behind.
    """
    started = time.perf_counter()
    runs = [_prepare(model, tokenizer, slot, job, settings) for slot, (job, settings) in enumerate(jobs)]
    _add_references(model, runs)
    groups = [{"params": run.parameters(), "lr": run.settings.learning_rate} for run in runs]
    steps = range(max((len(run.schedule) for run in runs), default=0))
    with _frozen_in_train_mode(model), stacked_layers(model, [run.weights for run in runs]) as routing:
        # One pass over the steps of the longest run; each run records the losses of its own epochs.
        fit(groups, [steps], lambda step: _train_step(model, routing, runs, step, tokenizer.pad_token_id, max_tokens))
    seconds = time.perf_counter() - started
    total_tokens = sum(run.tokens_trained() for run in runs) or 1
    saved: list[TrainedAdapter] = []
    try:
        for run in runs:
            saved.append(_save(run, base_model, seconds * run.tokens_trained() / total_tokens))
    except BaseException:
        for result in saved:
            shutil.rmtree(result.folder, ignore_errors=True)
        raise
    return saved


def plan_micro_batches(
    lengths: list[int],
    max_tokens: int = MICROBATCH_TOKENS,
    overhead: int = MICROBATCH_OVERHEAD_TOKENS,
    max_rows: int = MICROBATCH_ROWS,
) -> list[list[int]]:
    """Split samples (by index) into micro-batches of similar length that minimise padded work.

    Sorted by length, the samples are cut into contiguous runs; a run costs ``rows * longest +
    overhead`` tokens, and the cut with the least total cost (dynamic programming) wins, with at
    most ``max_tokens`` padded tokens and ``max_rows`` rows a run (a lone longer sample still runs).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0.0] + [math.inf] * len(order)  # best[j]: least cost of the j shortest samples
    cut = [0] * (len(order) + 1)  # cut[j]: where the last micro-batch of that best split starts
    for end in range(1, len(order) + 1):
        width = lengths[order[end - 1]]
        for start in range(end - 1, max(end - max_rows, 0) - 1, -1):
            rows = end - start
            if rows > 1 and rows * width > max_tokens:
                break
            cost = best[start] + rows * width + overhead
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


# --------------------------------------------------------------------------- one step


def _train_step(
    model: PreTrainedModel,
    routing: Routing,
    runs: list[_Run],
    step: int,
    pad_id: int,
    max_tokens: int,
) -> float:
    """The gradients of step ``step`` of every run that has one, over pooled and re-bucketed micro-batches.

    Records each of those runs' loss and returns their sum (the step's objective).
    """
    active = [run for run in runs if step < len(run.schedule)]
    samples = [
        (run.slot, run.sequences[i], run.references.get(i)) for run in active for i in run.schedule[step].indices
    ]
    # Each run's loss is normalised by its own step's target count (one target per token after the first).
    targets = {run.slot: sum(len(run.sequences[i]) - 1 for i in run.schedule[step].indices) for run in active}
    losses = dict.fromkeys(targets, 0.0)
    for rows in plan_micro_batches([len(seq) for _, seq, _ in samples], max_tokens):
        batch = sorted((samples[i] for i in rows), key=lambda sample: sample[0])  # each slot's rows contiguous
        routing.segments = row_segments([slot for slot, _, _ in batch])
        weight = torch.tensor([1.0 / max(targets[slot], 1) for slot, _, _ in batch])  # (n,)
        summed = _summed_token_losses(model, collate([seq for _, seq, _ in batch], pad_id), [r for _, _, r in batch])
        row_losses = summed * weight.to(model.device)  # (n,)
        row_losses.sum().backward()
        for (slot, _, _), value in zip(batch, row_losses.tolist(), strict=True):
            losses[slot] += value
    for run in active:
        run.step_losses.append(losses[run.slot])
    return sum(losses.values())


def _summed_token_losses(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], references: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    """Each row's summed next-token loss over its real tokens: (n,).

    Cross-entropy on the row's own next tokens, or, for a row with a reference (a KL anchor), the KL divergence
    KL(reference || model) of each position's next-token distribution, summed over the same positions.
    """
    device = model.device
    logits = model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False
    ).logits  # (n, T, V)
    # Position t predicts token t+1; the last position predicts nothing (as in transformers' causal LM loss).
    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX).to(device)  # (n, T)
    token_losses = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )  # (n*T,), zero where there is no target
    summed = token_losses.view(targets.shape).sum(dim=1)  # (n,)
    if all(reference is None for reference in references):
        return summed
    rows = [
        _summed_kl(logits[row, : reference.shape[0]], reference.to(device)) if reference is not None else summed[row]
        for row, reference in enumerate(references)
    ]
    return torch.stack(rows)


def _summed_kl(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KL(reference || softmax(logits)) summed over positions; both (L, V), the reference as log-probabilities."""
    return F.kl_div(logits.float().log_softmax(dim=-1), reference, log_target=True, reduction="sum")


# --------------------------------------------------------------------------- setup and saving


def _prepare(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, slot: int, job: TrainJob, settings: TrainConfig
) -> _Run:
    """Tokenise a job, lay out its schedule and draw its initial LoRA weights as peft would."""
    sequences = tokenize_texts(tokenizer, training_texts(job, settings), settings.max_length)
    modules = target_module_names(model, settings.target_modules)
    torch.manual_seed(settings.seed)  # as a peft training does just before get_peft_model
    weights = init_lora_weights(model, modules, settings.rank, settings.alpha, settings.dropout)
    anchors = range(len(sequences) - len(job.anchor_texts), len(sequences))  # training_texts puts them last
    schedule = training_schedule(len(sequences), settings)
    return _Run(slot, settings, sequences, schedule, modules, weights, anchors)


def _add_references(model: PreTrainedModel, runs: list[_Run]) -> None:
    """For runs with KL anchors: the model's own next-token log-probs on each anchor, before any training.

    A fresh LoRA adds nothing (B = 0), so the model as given is every candidate's starting point; the
    references are computed once per distinct anchor sequence and shared by the runs that have it.
    """
    computed: dict[tuple[int, ...], torch.Tensor] = {}
    with torch.no_grad():
        for run in runs:
            if run.settings.anchor_loss != "kl":
                continue
            for index in run.anchors:
                sequence = tuple(run.sequences[index])
                if sequence not in computed:
                    ids = torch.tensor([sequence], device=model.device)
                    logits = model(input_ids=ids, use_cache=False).logits[0, :-1]  # (len-1, V)
                    computed[sequence] = logits.float().log_softmax(dim=-1)
                run.references[index] = computed[sequence]


@contextmanager
def _frozen_in_train_mode(model: PreTrainedModel) -> Iterator[None]:
    """Base weights frozen (no weight gradients) and the model in train mode; both restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        model.train()
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(was_training)


def _save(run: _Run, base_model: str, seconds: float) -> TrainedAdapter:
    """Write the run's adapter as peft's ``save_pretrained`` would (weights and config) in a scratch folder."""
    folder = Path(tempfile.mkdtemp(prefix="adapter-", dir=scratch_folder()))
    try:
        save_file(peft_state_dict(run.weights), folder / "adapter_model.safetensors", metadata={"format": "pt"})
        config = lora_config(run.settings, base_model)
        targets = run.settings.target_modules
        config.target_modules = set(run.modules) if targets == "all-linear" else set(targets)  # what peft records
        config.inference_mode = True
        config.save_pretrained(folder)
        finish_adapter_config(folder, base_model)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    losses = epoch_means(run.schedule, run.step_losses)
    return TrainedAdapter(folder, run.settings, len(run.sequences), len(run.schedule), losses, seconds)
