"""``seal bench continual`` at a tiny size, in process: three arms over the same self-edits, resumable."""

from __future__ import annotations

import json
import shlex

import pytest

from apps.cli import build_parser
from apps.cli_config import ConfigError, build_config
from apps.continual_bench import STEPS_FILE, run_continual_bench
from apps.continual_config import ARMS, NAIVE, ContinualBenchConfig, command_line
from library.jsonl import read_jsonl
from protocol.messages import SamplingConfig, TrainConfig


def test_three_arms_forgetting_matrices_means_and_a_resume(tiny_model_dir, tmp_path):
    config = ContinualBenchConfig(
        model=tiny_model_dir,
        limit=2,
        out=tmp_path / "bench",
        train=TrainConfig(epochs=1, max_length=128),
        sampling=SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=16, seed=0),
        answer_tokens=4,
        rehearsal=1,
    )
    command = command_line(config, threads=1)
    report = run_continual_bench(config, command)
    steps = read_jsonl(config.out / STEPS_FILE)
    # After step t, every seen passage measured on the served stack, in every arm.
    assert sorted((r["arm"], r["step"]) for r in steps) == sorted((a, s) for a in ARMS for s in (1, 2, 2))
    naive = [r for r in steps if r["arm"] == NAIVE]
    assert [r["stack"] for r in naive] == [1, 2, 2], "without a gate every candidate is stacked"
    text = report.read_text()
    assert command in text and all(f"## {arm}" in text for arm in ARMS)
    assert text.count("| passage | after 1 | after 2 |") == 3
    for name in ("continual.png", "forgetting_naive_sequential.png", "forgetting_seal_gate_and_rehearsal.png"):
        assert (config.out / name).read_bytes()[:4] == b"\x89PNG"
    means = json.loads((config.out / "results.json").read_text())["means"]
    seen = [len(naive[0]["right"]), len(naive[1]["right"]) + len(naive[2]["right"])]
    assert [m["questions"] for m in means[NAIVE]] == seen
    # Every arm trained the same self-edits, sampled once.
    assert len(read_jsonl(config.out / "self_edits.jsonl")) == 2
    # A rerun resumes: nothing adapted or measured again.
    run_continual_bench(config, command)
    assert read_jsonl(config.out / STEPS_FILE) == steps
    assert len(read_jsonl(config.out / "naive_sequential" / "results.jsonl")) == 2
    # A rerun with other settings is refused before anything is loaded or written.
    with pytest.raises(ConfigError, match="--min-gain"):
        run_continual_bench(config.model_copy(update={"min_gain": 0.5}), command)
    # The command in the report is the one that runs this configuration.
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert build_config(ContinualBenchConfig, args) == config and args.threads == 1


def test_the_naive_arm_lets_every_lost_fact_pass_and_the_gate_arms_keep_the_allowance(tmp_path):
    """At a dose that learns, every candidate forgets probe facts: a naive arm the probes veto would stack nothing."""
    from apps.continual_bench import _auditor_config
    from auditor.safety import load_probes

    config = ContinualBenchConfig(probe_answers_may_lose=2)
    facts = sum(p.expect == "answer" for p in load_probes(None))
    assert _auditor_config(config, NAIVE, tmp_path).probe_answers_may_lose >= facts
    assert all(_auditor_config(config, arm, tmp_path).probe_answers_may_lose == 2 for arm in ARMS[1:])
