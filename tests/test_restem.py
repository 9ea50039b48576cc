"""ReST^EM: the filter, the teacher's fine-tuning, the auditor's check of claimed rewards, and the rounds end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from apps import restem_report
from auditor.teacher_versions import record_teacher_version
from library.datasets import DEMO_DOCUMENTS
from library.ledger import Ledger, WriterLock, verify_ledger
from library.training import IGNORE_INDEX
from protocol.artifacts import pairs_sha256
from protocol.codec import ProtocolError
from protocol.messages import Context, RecordTeacherVersion, SamplingConfig, VersionExample, Veto
from teacher.backends import TransformersTeacher
from teacher.loop import Outcome
from teacher.restem import select_kept
from teacher.sft import SFTConfig, tokenize_pair, train_teacher_adapter
from tests.examples import SELF_EDIT, VERDICT
from tests.test_end_to_end import _seal

CONTEXT = Context(context_id="c1", title="T", text="A passage.")


def _edit(edit_id: str, text: str = "a fact"):
    return SELF_EDIT.model_copy(update={"self_edit_id": edit_id, "text": text})


def _verdict(edit_id: str, reward: float, entry: str, vetoes: list[Veto] | None = None):
    return VERDICT.model_copy(
        update={"self_edit_id": edit_id, "reward": reward, "ledger_entry": entry, "vetoes": vetoes or []}
    )


# --------------------------------------------------------------------------- the filter


def test_filter_keeps_the_best_mean_reward_per_context():
    outcome = Outcome(
        CONTEXT,
        [_edit("a"), _edit("b")],
        [_verdict("a", 0.9, "1" * 64), _verdict("a", 0.1, "2" * 64), _verdict("b", 0.6, "3" * 64)],
    )
    [kept] = select_kept([outcome], min_reward=0.0)
    assert kept.self_edit.self_edit_id == "b", "a's mean over its two seeds is 0.5, below b's 0.6"
    assert kept.reward == pytest.approx(0.6)
    assert kept.verdict_entries == ["3" * 64]


def test_filter_never_keeps_a_self_edit_that_did_not_beat_the_base_or_was_vetoed():
    vetoed = [Veto(reviewer="rules", reason="secret")]
    outcomes = [
        Outcome(CONTEXT, [_edit("a")], [_verdict("a", -0.2, "1" * 64)]),
        Outcome(CONTEXT, [_edit("b")], [_verdict("b", 0.0, "2" * 64)]),
        Outcome(CONTEXT, [_edit("c")], [_verdict("c", 2.0, "3" * 64, vetoed)]),
        Outcome(CONTEXT, [_edit("d")], [_verdict("d", 0.3, "4" * 64)]),
        Outcome(CONTEXT, [_edit("e", "  ")], [_verdict("e", 5.0, "5" * 64)]),
    ]
    assert [k.self_edit.self_edit_id for k in select_kept(outcomes, 0.0)] == ["d"]
    assert select_kept(outcomes, min_reward=0.5) == []


# --------------------------------------------------------------------------- the M-step


def test_only_completion_tokens_carry_loss(tiny_model_dir):
    teacher = TransformersTeacher(tiny_model_dir, device="cpu")
    example = tokenize_pair(teacher.tokenizer, "Write facts.", "fact one", max_length=512)
    completion = teacher.tokenizer("fact one", add_special_tokens=False)["input_ids"]
    labels = example["labels"]
    n_prompt = len(labels) - len(completion) - 1
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == [*completion, teacher.tokenizer.eos_token_id]
    assert example["input_ids"][n_prompt:] == labels[n_prompt:]


def test_truncation_keeps_the_whole_completion(tiny_model_dir):
    teacher = TransformersTeacher(tiny_model_dir, device="cpu")
    example = tokenize_pair(teacher.tokenizer, "word " * 400, "the answer", max_length=64)
    assert len(example["input_ids"]) == 64
    assert example["labels"][-1] == teacher.tokenizer.eos_token_id
    assert sum(label != IGNORE_INDEX for label in example["labels"]) > 1


def _completion_loglik(teacher: TransformersTeacher, prompt: str, completion: str) -> float:
    example = tokenize_pair(teacher.tokenizer, prompt, completion, max_length=512)
    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor([example["labels"]])
    with torch.no_grad():
        return -teacher.model(input_ids=ids, labels=labels).loss.item()


def test_fine_tuned_version_prefers_its_training_completions(tiny_model_dir):
    teacher = TransformersTeacher(tiny_model_dir, device="cpu")
    pairs = [("Passage: Ostrevane was founded in 1873.", "Ostrevane is 150 years old in 2023.")]
    before = _completion_loglik(teacher, *pairs[0])
    settings = SFTConfig(rank=8, alpha=16, learning_rate=1e-2, epochs=8, batch_size=1)
    result = train_teacher_adapter(teacher.base_model, teacher.tokenizer, pairs, tiny_model_dir, settings)
    assert result.steps == 8 and result.losses[-1] < result.losses[0]
    name = teacher.serve_version(result.folder)
    assert name.startswith("teacher-")
    after = _completion_loglik(teacher, *pairs[0])
    assert after > before + 1.0
    teacher.serve_base()
    assert _completion_loglik(teacher, *pairs[0]) == pytest.approx(before, abs=1e-5), "serve_base restores the base"
    sampled = teacher.sample(["Passage: Ostrevane was founded in 1873."], 1, SamplingConfig(temperature=0.0))
    assert len(sampled) == 1


# --------------------------------------------------------------------------- the auditor's record


def _ledger_with_verdicts(tmp_path):
    """e1 judged twice (0.4, 0.6), e2 vetoed, e3 rejected for retention; each record holds its self-edit."""
    ledger = Ledger(tmp_path / "ledger.jsonl")
    entries = []
    judged = [("e1", 0.4, [], True), ("e1", 0.6, [], True), ("e2", 1.0, [{"reviewer": "r", "reason": "x"}], False),
              ("e3", 0.8, [], False)]  # fmt: skip
    for edit_id, reward, vetoes, accepted in judged:
        verdict = _verdict(edit_id, reward, "").model_dump(mode="json") | {"vetoes": vetoes, "accepted": accepted}
        record = {"adapter_id": "ab" * 32, "verdict": verdict, "self_edit": _edit(edit_id).model_dump(mode="json")}
        entries.append(ledger.append("verdict", record))
    return ledger, entries


def _request(examples: list[VersionExample], data_sha256: str | None = None) -> RecordTeacherVersion:
    pairs = [(_edit(e.self_edit_id).prompt, _edit(e.self_edit_id).text) for e in examples]
    return RecordTeacherVersion(
        version="v1",
        round=0,
        kind="lora",
        teacher_model="tiny",
        artifact_sha256="cd" * 32,
        data_sha256=data_sha256 or pairs_sha256(pairs),
        examples=examples,
    )


def test_auditor_records_a_version_whose_rewards_match_its_verdicts_once(tmp_path):
    ledger, entries = _ledger_with_verdicts(tmp_path)
    good = _request([VersionExample(context_id="c1", self_edit_id="e1", reward=0.5, verdict_entries=entries[:2])])
    first = record_teacher_version(ledger, good)
    assert record_teacher_version(ledger, good) == first, "the same version twice is recorded once"
    [entry] = ledger.find(version="v1")
    assert entry["kind"] == "teacher_version" and entry["hash"] == first.ledger_entry
    assert entry["record"]["examples"][0]["verdict_entries"] == entries[:2]
    assert verify_ledger(tmp_path / "ledger.jsonl").ok


@pytest.mark.parametrize(
    ("example", "problem"),
    [
        (dict(self_edit_id="e1", reward=0.9, verdict_entries=[0, 1]), "claimed reward"),
        (dict(self_edit_id="e1", reward=0.4, verdict_entries=[0]), "cites 1 of the 2 verdicts"),
        (dict(self_edit_id="e1", reward=0.4, verdict_entries=[0, 0]), "cited twice"),
        (dict(self_edit_id="e1", reward=0.5, verdict_entries=[0, "f" * 64]), "not in this auditor's ledger"),
        (dict(self_edit_id="e9", reward=0.4, verdict_entries=[0]), "another self-edit"),
        (dict(self_edit_id="e2", reward=1.0, verdict_entries=[2]), "veto"),
        (dict(self_edit_id="e3", reward=0.8, verdict_entries=[3]), "rejected"),
    ],
)
def test_auditor_refuses_claims_its_ledger_does_not_back(tmp_path, example, problem):
    ledger, entries = _ledger_with_verdicts(tmp_path)
    cited = [entries[i] if isinstance(i, int) else i for i in example.pop("verdict_entries")]
    request = _request([VersionExample(context_id="c1", verdict_entries=cited, **example)])
    before = ledger.count
    with pytest.raises(ProtocolError, match=problem):
        record_teacher_version(ledger, request)
    assert ledger.count == before


def test_auditor_refuses_a_version_trained_on_other_data_than_it_rewarded(tmp_path):
    ledger, entries = _ledger_with_verdicts(tmp_path)
    example = VersionExample(context_id="c1", self_edit_id="e1", reward=0.5, verdict_entries=entries[:2])
    swapped = _request([example], data_sha256=pairs_sha256([(SELF_EDIT.prompt, "text the auditor never judged")]))
    with pytest.raises(ProtocolError, match="data_sha256"):
        record_teacher_version(ledger, swapped)
    with pytest.raises(ProtocolError, match="at least one"):
        record_teacher_version(ledger, _request([]))


# --------------------------------------------------------------------------- rounds, end to end


def test_train_teacher_runs_two_rounds_records_versions_and_resumes(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "restem"
    args = ["train-teacher", "--model", tiny_model_dir, "--data", str(DEMO_DOCUMENTS), "--limit", "2"]
    args += ["--rounds", "2", "--k", "2", "--epochs", "2", "--sft-epochs", "1", "--run-dir", str(run_dir)]
    args += ["--propose-ahead"]  # each next passage sampled while the last is trained and judged
    done = _seal(*args, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ReST^EM rounds" in done.stdout
    assert yaml.safe_load((run_dir / "config" / "teacher.yaml").read_text())["propose_ahead"] is True
    versions = json.loads((run_dir / "teacher" / "versions.json").read_text())
    assert [v["version"] for v in versions] == ["v1", "v2"]
    for r in (0, 1):
        outcomes = [json.loads(line) for line in (run_dir / f"round-{r}" / "results.jsonl").read_text().splitlines()]
        assert len(outcomes) == 2
        sampled_by = {e["teacher_version"] for o in outcomes for e in o["self_edits"]}
        assert sampled_by == {"v0" if r == 0 else "v1"}
    entries = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    recorded = [e for e in entries if e["kind"] == "teacher_version"]
    lora = [v for v in versions if v["kind"] == "lora"]
    assert len(recorded) == len(lora) and all(v["ledger_entry"] for v in lora)
    assert verify_ledger(run_dir / "ledger.jsonl").ok

    book = run_dir / "teacher" / "versions.json"
    interrupted = [{**versions[0], "ledger_entry": None}, *versions[1:]]  # stopped between booking and record
    book.write_text(json.dumps(interrupted))
    again = _seal(*args, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert verify_ledger(run_dir / "ledger.jsonl").entries == len(entries), "a finished run is not redone"
    assert json.loads(book.read_text())[0]["ledger_entry"] == versions[0]["ledger_entry"], "the record is finished"

    _check_the_run_summary(run_dir, tmp_path / "summary", versions)
    _check_the_run_carries_to_a_fresh_folder(run_dir, tmp_path, args, versions)


def _check_the_run_summary(run_dir, out, versions) -> None:
    """``apps.restem_report`` on the finished run, then on the same folder as if round 1 were under way."""
    assert restem_report.main([str(run_dir), str(out)]) == 0
    summary = json.loads((out / "rounds.json").read_text())
    assert [(r["round"], r["sampled_by"], r["tasks"], r["made"]) for r in summary["rounds"]] == [
        (0, "v0", 2, "v1"),
        (1, "v1", 2, "v2"),
    ]
    for r, version in zip(summary["rounds"], versions, strict=True):
        assert r["kept"] == version["examples"] == sum(len(c["kept"]) for c in r["contexts"])
        assert r["candidates"] == sum(len(c["rewards"]) for c in r["contexts"])
    booked = {v["version"]: v["ledger_entry"] for v in versions}
    assert {v["version"]: v["ledger_entry"] for v in summary["versions"][1:]} == booked
    assert summary["ledger"]["ok"] and summary["ledger"]["kinds"]["teacher_version"] == 2
    assert all(entry in (out / "rounds.md").read_text() for entry in booked.values())
    [change] = summary["round_changes"]
    best = {c["context_id"]: max(c["rewards"]) for c in summary["rounds"][0]["contexts"]}
    gains = [max(c["rewards"]) - best[c["context_id"]] for c in summary["rounds"][1]["contexts"]]
    assert (change["round"], change["against"], change["contexts"]) == (1, 0, 2)
    assert change["best_reward_change"] == pytest.approx(sum(gains) / 2)
    assert "| 1 against 0 | v1 against v0 | 2 |" in (out / "rounds.md").read_text()

    results = run_dir / "round-1" / "results.jsonl"
    results.write_text(results.read_text().splitlines()[0] + "\n")  # one context of round 1 finished
    (run_dir / "teacher" / "versions.json").write_text(json.dumps(versions[:1]))
    assert restem_report.main([str(run_dir), str(out)]) == 0
    assert "| 1 | v1 | 1 of 2 |" in (out / "rounds.md").read_text()
    assert "round under way" in (out / "rounds.md").read_text()
    assert "| 1 against 0 | v1 against v0 | 1 |" in (out / "rounds.md").read_text(), "paired on what both finished"


def _check_the_run_carries_to_a_fresh_folder(run_dir, tmp_path, args, versions) -> None:
    """``--carry`` on the run left with round 1 under way: the fresh folder redoes round 1 only, with new keys."""
    out = tmp_path / "carried-summary"
    held = WriterLock(run_dir / "ledger.jsonl")  # as the auditor of a live run holds it
    assert restem_report.main([str(run_dir), str(out), "--carry"]) == 2, "a live run is not carried"
    held.release()
    assert not (out / "carry").exists()
    assert restem_report.main([str(run_dir), str(out), "--carry"]) == 0
    assert restem_report.main([str(run_dir), str(out), "--carry"]) == 2, "never over an earlier carry"
    carried = out / "carry"
    names = {p.relative_to(carried).as_posix() for p in carried.rglob("*") if p.is_file()}
    assert "round-0/results.jsonl" in names and not any(n.startswith("round-1") for n in names)
    assert not any("secret" in n or n.endswith("auditor.sign") for n in names), "no secret key is carried"
    [earlier] = [n for n in names if n.endswith("ledger.jsonl")]
    fresh = tmp_path / "continued"
    shutil.copytree(carried, fresh)
    continued = [*args[: args.index("--run-dir")], "--run-dir", str(fresh), *args[args.index("--run-dir") + 2 :]]
    done = _seal(*continued, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    entries = [json.loads(line) for line in (fresh / "ledger.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "verdict" for e in entries) == 4, "round 1 only: 2 contexts x 2 self-edits"
    assert [e["kind"] for e in entries].count("teacher_version") == 1
    assert (fresh / "keys" / "auditor.sign.pub").read_bytes() != (run_dir / "keys" / "auditor.sign.pub").read_bytes()
    assert restem_report.main([str(fresh), str(tmp_path / "continued-summary")]) == 0
    summary = json.loads((tmp_path / "continued-summary" / "rounds.json").read_text())
    assert [(r["round"], r["sampled_by"], r["tasks"], r["made"]) for r in summary["rounds"]] == [
        (0, "v0", 2, "v1"),
        (1, "v1", 2, "v2"),
    ]
    v1, v2 = summary["versions"][1:]
    assert v1["ledger_entry"] == versions[0]["ledger_entry"] and v1["recorded_in"] == earlier
    assert v2["recorded_in"] == "ledger.jsonl" and summary["ledger"]["ok"]
    assert [e["ok"] for e in summary["earlier_ledgers"]] == [True]
    assert restem_report.main([str(fresh), str(tmp_path / "again"), "--carry"]) == 0
    assert len(list((tmp_path / "again" / "carry" / "earlier").iterdir())) == 2, "both runs' ledgers go on"


def test_a_vllm_teacher_must_be_able_to_serve_the_rank_restem_trains():
    from pydantic import ValidationError

    from teacher.config import TeacherConfig

    with pytest.raises(ValidationError, match="max-lora-rank 16"):
        TeacherConfig(model="vllm:some/model", restem={"rounds": 1, "sft": {"rank": 32}}, vllm={"max_lora_rank": 16})
    TeacherConfig(model="vllm:some/model", restem={"rounds": 0, "sft": {"rank": 32}}, vllm={"max_lora_rank": 16})
    TeacherConfig(model="vllm:some/model", restem={"rounds": 1, "sft": {"rank": 16}}, vllm={"max_lora_rank": 16})
    with pytest.raises(ValidationError, match="enable-lora"):
        TeacherConfig(model="vllm:some/model", restem={"rounds": 1}, vllm={"enable_lora": False})
