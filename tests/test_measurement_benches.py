"""The answer-format, probe-loss and stack-cost benches run end to end on the tiny model and write their tables."""

from __future__ import annotations

import json

from bench import answer_format, probe_loss, stack_cost


def test_answer_format_scores_base_and_adapter_with_and_without_the_instruction(tiny_model_dir, tmp_path):
    answer_format.main(["--model", tiny_model_dir, "--limit", "1", "--epochs", "1", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "answer_format.json").read_text())["summary"]
    assert [(r["prompt"], r["model"]) for r in summary] == [
        (prompt, model) for prompt in answer_format.INSTRUCTIONS for model in ("base", "passage adapter")
    ]
    assert all(r["questions"] == 5 and r["right"] == round(r["answer_recall"] * 5) for r in summary)
    assert "| short-answer instruction | base |" in (tmp_path / "answer_format.md").read_text()


def test_stack_cost_times_a_stack_stacked_and_merged(tiny_model_dir, tmp_path):
    stack_cost.main(["--model", tiny_model_dir, "--depths", "1", "2", "--repeats", "1", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "stack_cost.json").read_text())["rows"]
    assert [r["depth"] for r in rows] == [1, 2]
    assert all(r["stacked_forward_s"] > 0 and r["merged_forward_s"] > 0 for r in rows)


def test_probe_loss_counts_facts_lost_and_tau_gained_per_setting(tiny_model_dir, tmp_path):
    settings = "1e-3x1,1e-4x1a2"  # the second with two anchors
    probe_loss.main(["--model", tiny_model_dir, "--limit", "2", "--settings", settings, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "probe_loss.json").read_text())
    assert [r["setting"] for r in report["summary"]] == ["1e-3x1", "1e-4x1a2"]
    assert report["facts"] == 9 and len(report["rows"]) == 4
    for row in report["summary"]:
        assert row["candidates"] == 2 and row["questions"] == 10
        assert row["pass_0"] <= row["pass_1"] == sum(n <= 1 for n in row["facts_lost"])
    assert all(len(r["probe_answers"]) == 14 and r["gain_loglik"] != 0 for r in report["rows"])
    assert "| 1e-3x1 | 2 |" in (tmp_path / "probe_loss.md").read_text()
