"""``--metric judge``: the auditor's LLM judge against loopback OpenAI and Anthropic servers.

Failed and unreadable judgements (500s, garbage) are recorded as failed and never count; a verdict on too few
judgements is refused with that reason; the judge's key stays in the auditor (never in the ledger).
"""

from __future__ import annotations

import pytest

from auditor.config import AuditorConfig
from auditor.decision import Decider, ModelResult
from auditor.judge_metric import JudgeConfig, JudgeMetric
from library.datasets import QAItem
from library.ledger import Ledger
from protocol.messages import CandidateToJudge, Scores
from protocol.signing import sign_verdict, verify_signature
from tests.examples import CANDIDATE, SELF_EDIT, VERDICT
from tests.fake_api import FAKE_KEY, FakeAPI

TAU = [QAItem("Who founded Ostrevane?", ["Ilsabet Quorne"]), QAItem("When was it founded?", ["1873"])]
BASE = ["A weaver", "1900"]
LEARNED = ["Ilsabet Quorne", "1873"]


@pytest.fixture(params=["openai", "anthropic"])
def api(request, tmp_path):
    key_file = tmp_path / "judge.key"
    key_file.write_text(FAKE_KEY + "\n")
    with FakeAPI(request.param) as server:
        server.key_file = key_file
        yield server


def _metric(api: FakeAPI, **settings) -> JudgeMetric:
    return JudgeMetric(
        JudgeConfig(model=f"{api.flavour}:fake-model", base_url=api.base_url, key_file=api.key_file, retries=0,
                    concurrency=1, **settings)
    )  # fmt: skip


def test_the_judge_scores_base_and_candidate_over_what_it_judged_for_both(api):
    metric = _metric(api, min_judged_share=0.5)
    base = metric.grade(TAU, BASE)
    api.script.append("garbage")  # the candidate's first answer: an unreadable reply, neither right nor wrong
    cand = metric.grade(TAU, LEARNED)
    assert [j.correct for j in base] == [False, False] and [j.correct for j in cand] == [None, True]
    outcome = metric.compare(TAU, base, cand)
    assert outcome.problem is None and (outcome.base, outcome.candidate) == (0.0, 1.0)
    assert [q["candidate"] for q in outcome.detail["per_question"]] == ["failed", "right"]
    assert outcome.detail["model"] == f"{api.flavour}:fake-model" and outcome.detail["judged_both"] == 1
    assert all(body.get("temperature", 0.0) == 0.0 for body in api.generations())


@pytest.mark.parametrize("action", ["500", "garbage", "malformed"])
def test_too_few_judgements_refuse_the_verdict(api, action):
    metric = _metric(api)
    base = metric.grade(TAU, BASE)
    api.default_action = action
    outcome = metric.compare(TAU, base, metric.grade(TAU, LEARNED))
    assert outcome.problem and "graded only 0 of 2 questions" in outcome.problem and outcome.candidate is None
    assert FAKE_KEY not in str(outcome.detail) and FAKE_KEY not in outcome.problem


def test_the_decider_accepts_on_the_judges_gain_and_refuses_without_enough_judgements(api, tmp_path):
    config = AuditorConfig(
        metric="judge", judge=JudgeConfig(model=f"{api.flavour}:fake-model", key_file=api.key_file), min_gain=0.5,
        ledger=tmp_path / "ledger.jsonl",
    )  # fmt: skip
    decider = Decider(config, Ledger(config.ledger), [], None)
    item = CandidateToJudge(self_edit=SELF_EDIT, candidate=CANDIDATE)
    base, cand = ModelResult(BASE, [-3.0, -3.0], [], []), ModelResult(LEARNED, [-3.1, -3.1], [], [])
    metric = _metric(api)
    judged = metric.compare(TAU, metric.grade(TAU, BASE), metric.grade(TAU, LEARNED))
    verdict = decider.decide(item.self_edit.context_id, TAU, item, base, cand, [], judged)
    assert verdict.accepted and verdict.reward == 1.0 and verdict.metric == "judge", verdict.reason
    assert (verdict.base.judge, verdict.candidate.judge) == (0.0, 1.0)
    api.default_action = "500"
    failed = metric.compare(TAU, metric.grade(TAU, BASE), metric.grade(TAU, LEARNED))
    refused = decider.decide(item.self_edit.context_id, TAU, item, base, cand, [], failed)
    assert not refused.accepted and "graded only 0 of 2" in refused.reason
    entries = decider.ledger.entries()
    assert entries[-1]["record"]["judge"]["per_question"][0]["candidate"] == "failed"
    assert FAKE_KEY not in config.ledger.read_text()


def test_a_verdict_without_a_judge_share_signs_as_before():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    scores = Scores(exact_match=0.0, f1=0.0, loglik=-1.0, n_questions=1)
    assert "judge" not in scores.model_dump(mode="json")  # so verdicts signed before the field existed still verify
    key = Ed25519PrivateKey.generate()
    verdict = sign_verdict(VERDICT.model_copy(update={"candidate": scores.model_copy(update={"judge": 0.5})}), key)
    verify_signature(verdict, key.public_key())
    with pytest.raises(Exception, match="forged or altered"):
        altered = verdict.model_copy(update={"candidate": verdict.candidate.model_copy(update={"judge": 1.0})})
        verify_signature(altered, key.public_key())


def test_metric_judge_needs_a_judge():
    with pytest.raises(ValueError, match="needs a judge"):
        AuditorConfig(metric="judge")


def test_the_launchers_give_the_judge_to_the_auditor_alone(tmp_path):
    from apps.cli import build_parser
    from apps.cli_config import ConfigError
    from apps.demo import LaunchConfig, role_configs, write_role_configs
    from apps.judge_cli import judge_from_args

    args = build_parser().parse_args(
        ["train-teacher", "--data", "d.json", "--metric", "judge", "--judge", "openai:gpt-4o-mini",
         "--judge-key-file", str(tmp_path / "judge.key")]
    )  # fmt: skip
    configs = role_configs(LaunchConfig(run_dir=tmp_path, metric="judge", judge=judge_from_args(args)))
    assert configs.auditor.judge.model == "openai:gpt-4o-mini" and configs.auditor.metric == "judge"
    files = write_role_configs(configs, tmp_path / "config")
    assert "judge.key" in files["auditor"].read_text()
    assert "judge.key" not in files["teacher"].read_text() + files["student"].read_text()
    assert "gpt-4o-mini" not in files["teacher"].read_text() + files["student"].read_text()
    with pytest.raises(ConfigError, match="needs a judge"):
        role_configs(LaunchConfig(run_dir=tmp_path, metric="judge"))
