"""The answer-format, probe-loss, stack-cost, self-edit-format and reward-noise benches, end to end."""

from __future__ import annotations

import json

import pytest

from bench import answer_format, probe_loss, restem_workers, reward_noise, self_edit_formats, stack_cost
from library.datasets import DEMO_DOCUMENTS
from library.jsonl import append_jsonl, read_jsonl
from tests.examples import VERDICT


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


def test_restem_workers_reads_finished_rounds_back_and_compares_them_with_the_first(tmp_path):
    """Finished runs are not run again: their times and verdicts are read back, the ratio and reward gap computed."""
    work = tmp_path / "work"
    for name, workers, ahead, wall, shift in (("1", 1, None, 100.0, 0.0), ("2", 2, None, 50.0, 3e-5),
                                              ("2-ahead", 2, True, 40.0, 0.0)):  # fmt: skip
        run_dir = work / f"workers-{name}"
        verdicts = [
            VERDICT.model_copy(update={"self_edit_id": f"e{i}", "reward": 0.5 + i + shift, "accepted": i == 0})
            for i in range(2)
        ]
        (run_dir / "round-0").mkdir(parents=True)
        append_jsonl(run_dir / "round-0" / "results.jsonl", {"verdicts": [v.model_dump() for v in verdicts]})
        timing = {"workers": workers, "wall_s": wall, "run_dir": str(run_dir)}  # as written before --propose-ahead
        append_jsonl(work / "timings.jsonl", timing | ({"propose_ahead": ahead} if ahead else {}))
    argv = ["--data", "unused.json", "--workers", "1,2,2+ahead", "--work", str(work), "--out", str(tmp_path / "out")]
    table = restem_workers.main(argv)
    assert [(r["workers"], r["propose_ahead"], r["candidates"]) for r in table] == [(1, False, 2), (2, False, 2),
                                                                                   (2, True, 2)]  # fmt: skip
    assert table[0]["candidates_per_hour"] == 72.0 and table[1]["ratio"] == 2.0 and table[2]["ratio"] == 2.5
    assert table[1]["same_self_edits"] == 2 and abs(table[1]["max_reward_diff"] - 3e-5) < 1e-9
    written = (tmp_path / "out" / "restem_workers.md").read_text()
    assert "| 2 | no | 50 | 2 | 144.0 | 2.00 | 1 | 2 | 3.00e-05 |" in written
    assert "| 2 | yes | 40 | 2 | 180.0 | 2.50 | 1 | 2 | 0.00e+00 |" in written


def test_self_edit_formats_samples_trains_and_scores_each_arm_and_resumes_without_redoing_any(tiny_model_dir, tmp_path):
    argv = ["--model", tiny_model_dir, "--data", str(DEMO_DOCUMENTS), "--limit", "2", "--k", "2", "--epochs", "1"]
    argv += ["--arms", "implications,self_qa+ex", "--out", str(tmp_path)]
    self_edit_formats.main(argv)
    records = read_jsonl(tmp_path / "records.jsonl")
    assert len(records) == 2 * (1 + 2 * 2), "per passage: the passage alone and k samples of each arm"
    summary = json.loads((tmp_path / "self_edit_formats.json").read_text())["summary"]
    assert [(s["arm"], s["passages"], s["samples"]) for s in summary] == [("implications", 2, 4), ("self_qa+ex", 2, 4)]
    for s in summary:
        assert 0 <= s["share_two_items"] <= 1 and s["share_listed"] <= 1
        best = [mean for mean, _ in s["best_of_k_loglik"]]
        assert best[1] >= best[0], "the best of two samples is at least the first"
    assert all(r["base_loglik"] != r["loglik"] for r in records), "every candidate was trained and scored"
    sampled = (tmp_path / "self_edits.jsonl").read_text()
    self_edit_formats.main(argv)  # resumes: nothing sampled or scored again
    assert len(read_jsonl(tmp_path / "records.jsonl")) == len(records)
    assert (tmp_path / "self_edits.jsonl").read_text() == sampled
    assert "| implications | 2 × 2 |" in (tmp_path / "self_edit_formats.md").read_text()


def test_probe_loss_settings_name_rate_epochs_anchors_rank_and_targets():
    setting = probe_loss.parse_setting("1e-3x10a16r8-attn")
    assert (setting.learning_rate, setting.epochs, setting.anchors) == (1e-3, 10, 16)
    assert (setting.rank, setting.alpha, setting.target_modules) == (8, 16.0, probe_loss.ATTENTION)
    assert setting.anchor_loss == "tokens" and probe_loss.parse_setting("1e-3x10a16k").anchor_loss == "kl"
    assert probe_loss.parse_setting("3e-4x3").target_modules == "all-linear"
    with pytest.raises(SystemExit, match="unknown setting"):
        probe_loss.parse_setting("fast")


def test_reward_noise_compares_the_same_samples_rewards_across_two_seeds(tmp_path):
    def records(path, gains):
        rows = []
        for context, passage_loglik in (("c1", -3.0), ("c2", -4.0)):
            rows.append({"context_id": context, "arm": "passage only", "sample": 0, "loglik": passage_loglik,
                         "answer_recall": 0.0})  # fmt: skip
            for sample, gain in enumerate(gains[context]):
                rows.append({"context_id": context, "arm": "self_qa+ex", "sample": sample,
                             "loglik": passage_loglik + gain, "answer_recall": 0.2 if gain > 0 else 0.0})  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    first = records(tmp_path / "s0.jsonl", {"c1": [0.1, -0.2, 0.3], "c2": [-0.1, 0.2, 0.0]})
    second = records(tmp_path / "s1.jsonl", {"c1": [0.3, -0.2, 0.1], "c2": [-0.1, 0.2, 0.0]})  # c1's best swapped
    (arm, overall) = reward_noise.main([str(first), str(second), "--out", str(tmp_path / "out")])
    assert arm["arm"] == "self_qa+ex" and arm["samples"] == 6 and (arm["same_best"], arm["passages"]) == (1, 2)
    assert 0 < arm["loglik_r"] < 1 and arm["sd_difference"] > 0 and arm["recall_same_sign"] == 6
    assert overall["arm"] == "all" and overall["samples"] == 6
    same = reward_noise.main([str(first), str(first), "--out", str(tmp_path / "same")])[0]
    assert same["loglik_r"] == pytest.approx(1.0) and same["sd_difference"] == 0 and same["same_best"] == 2
    assert "| self_qa+ex | 6 | 1.00 |" in (tmp_path / "same" / "reward_noise.md").read_text()
