"""``--auto-promote``'s selection and refusals against a real student over CURVE (the end-to-end demo runs it whole).

Each context's best accepted adapter is promoted as ``seal promote`` promotes it, and a verdict that
``seal promote`` refuses is refused with the same message; the rest are promoted all the same.
"""

from __future__ import annotations

import copy

import pytest

from apps.auto_promote import promote_accepted
from apps.cli import main
from apps.governance_cli import promote_from_ledger
from apps.roles import student_client
from apps.sequential_promote import PROMOTIONS_FILE, promote_pending, promoted_stack
from library.jsonl import append_jsonl
from library.ledger import Ledger, read_entries
from protocol.messages import ApplySelfEdits, Context
from teacher.loop import Outcome
from teacher.promotion_wait import PromotionTimeout, wait_for_promotions
from tests.test_governance_cli import _record_verdict, world  # noqa: F401 (world: the fixture)
from tests.test_student import _job


def test_best_accepted_per_context_stack_in_ledger_order_and_a_forged_verdict_is_refused(world, capsys):  # noqa: F811
    root, keys, student, endpoint = world
    ledger = root / "ledger.jsonl"
    _record_verdict(root, keys, student, gain=1.0, context="c1")
    best_c1 = _record_verdict(root, keys, student, gain=2.0, context="c1")
    c2 = _record_verdict(root, keys, student, gain=0.5, context="c2", on_top_of=[best_c1])
    _record_verdict(root, keys, student, gain=0.0, context="c3", on_top_of=[best_c1])  # rejected: never promoted
    stale = _record_verdict(root, keys, student, gain=3.0, context="c4")  # judged against the base: not promoted
    # An accepting verdict for another adapter, copied into a well-chained entry: its signature does not cover it.
    forged_adapter = student.apply_self_edits(ApplySelfEdits(jobs=[_job(self_edit="Forged.")])).candidates[0]
    forged = copy.deepcopy(read_entries(ledger)[-1]["record"])
    forged["adapter_id"] = forged["verdict"]["adapter_id"] = forged_adapter.adapter.adapter_id
    forged["verdict"].update(context_id="c5", accepted=True, reward=9.0, on_top_of=[best_c1, c2])
    forged["accepted"] = True
    writer = Ledger(ledger)
    writer.append("verdict", forged)
    writer.close()

    client = student_client(endpoint, "cli", 30, keys)
    try:
        result = promote_accepted(client, ledger, keys)
        again = promote_accepted(client, ledger, keys)  # a resumed run: what is served is not promoted twice
    finally:
        client.close()
    assert [(p.adapter_id, p.refused is None) for p in result.promotions] == [
        (best_c1, True),
        (c2, True),
        (forged_adapter.adapter.adapter_id, False),
    ]
    assert result.stack.stack == [best_c1, c2], "two contexts' adapters stack, each judged on the one below"
    assert result.judged_on_another_stack == [stale]
    assert again.already_served == [best_c1, c2] and again.stack.version == result.stack.version
    assert "promoted 2 adapter(s)" in result.summary() and "promoted 0 adapter(s)" in again.summary()

    common = ["--ledger", str(ledger), "--keys", str(keys), "--student", endpoint]
    assert main(["promote", forged_adapter.adapter.adapter_id, *common]) == 2
    assert capsys.readouterr().err.strip() == f"seal promote: {result.promotions[-1].refused}"


def test_demo_and_train_teacher_take_the_option_off_by_default(monkeypatch, tmp_path):
    import apps.demo
    from apps.cli import _demo, _train_teacher, build_parser

    captured = []
    monkeypatch.setattr(apps.demo, "run_demo", lambda opts, **_: captured.append(opts.auto_promote) or 0)
    parse = build_parser().parse_args
    _demo(parse(["demo", "--run-dir", str(tmp_path)]))
    _demo(parse(["demo", "--run-dir", str(tmp_path), "--auto-promote"]))
    _train_teacher(parse(["train-teacher", "--data", str(tmp_path / "d.json"), "--auto-promote"]))
    assert captured == [False, True, True]


def test_seal_adapts_step_promotes_each_finished_passage_once_and_the_teacher_waits_for_it(world):  # noqa: F811
    """``seal adapt --promote accepted``: a step per finished passage, in the teacher's order; never twice."""
    root, keys, student, endpoint = world
    run_dir = root  # the run folder: its ledger, and the teacher's results.jsonl written here
    c1 = _record_verdict(root, keys, student, gain=1.5, context="s1")
    _record_verdict(root, keys, student, gain=0.0, context="s2")  # rejected: nothing to promote
    c3 = _record_verdict(root, keys, student, gain=0.7, context="s3", on_top_of=[c1])  # judged on top of s1's
    results = run_dir / "results.jsonl"
    client = student_client(endpoint, "cli", 30, keys)
    try:
        if client.describe_served().stack:  # what the test before served
            client.rollback("base")
        for context in ("s1", "s2"):
            append_jsonl(results, Outcome(Context(context_id=context, text="x"), [], []).to_record())
        steps = promote_pending(client, run_dir, keys)
        assert [(s.context_id, s.adapter_id, s.outcome) for s in steps] == [
            ("s1", c1, "promoted"),
            ("s2", None, "nothing accepted"),
        ]
        assert promote_pending(client, run_dir, keys) == [], "a rerun steps no passage again"
        # A run cut off between the promotion and its line: the rerun finds the adapter served, promotes nothing.
        version = promote_from_ledger(client, run_dir / "ledger.jsonl", c3, keys).version
        append_jsonl(results, Outcome(Context(context_id="s3", text="x"), [], []).to_record())
        [step] = promote_pending(client, run_dir, keys)
        assert (step.outcome, step.stack) == ("already served", [c1, c3])
        assert client.describe_served().version == version
    finally:
        client.close()
    assert promoted_stack(run_dir) == [c1, c3]
    log = run_dir / PROMOTIONS_FILE
    wait_for_promotions(log, ["s1", "s2", "s3"], timeout_s=1.0)
    with pytest.raises(PromotionTimeout, match="for context s4 within 0s"):
        wait_for_promotions(log, ["s1", "s4"], timeout_s=0.2, poll_s=0.05)
