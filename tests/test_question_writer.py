"""τ written and kept by the auditor: cloze pairs, the checks, the sealed split, user question files, the ledger."""

from __future__ import annotations

import json

import pytest

from auditor.config import AuditorConfig
from auditor.decision import Decider, ModelResult
from auditor.document_tau import pair_writer, record_documents, write_tau
from auditor.grading import answer_recall
from auditor.question_files import assign_questions
from auditor.question_writer import BLANK, check_pairs, cloze_pairs, split_sets
from auditor.tau_config import DocumentTauConfig
from library.api_models import APIModelConfig
from library.backend_errors import BackendUnavailable
from library.datasets import DEMO_DOCUMENTS, DatasetError, QAItem
from library.documents import Passage, approx_tokens, read_documents
from library.ledger import Ledger
from protocol.messages import CandidateToJudge
from tests.examples import CANDIDATE, SELF_EDIT
from tests.fake_api import FAKE_KEY, FakeAPI

MARTEN = Passage(
    "marten.md",
    "Glasswing marten",
    "The glasswing marten is a small mammal found only in the cloud forests of Mount Ossebrand. It was first "
    "described in 1987 by the zoologist Perrin Achterberg. Adults weigh about 640 grams. Females give birth to two "
    "kits in March 2019. Rangers counted 1,130 individuals in the 2021 survey.",
)


def test_cloze_blanks_names_numbers_and_dates_that_are_spans():
    pairs = cloze_pairs(MARTEN)
    answers = [p.answers[0] for p in pairs]
    for expected in ["Mount Ossebrand", "1987", "Perrin Achterberg", "640", "March 2019", "1,130", "2021"]:
        assert expected in answers, answers
    assert not {"Adults", "Females", "It", "Rangers", "March", "2019"} & set(answers)  # sentence capitals, date parts
    for pair in pairs:
        assert pair.question.startswith("In the passage about Glasswing marten")
        assert pair.question.count(BLANK) == 1 and pair.answers[0] in MARTEN.text
    weight = next(p for p in pairs if p.answers == ["640"])
    assert weight.question.endswith("fill in the blank: Adults weigh about ____ grams.")


def test_checks_drop_what_is_not_a_span_given_away_in_the_title_or_repeated():
    pairs = [
        QAItem("Where does the marten live?", ["Mount Ossebrand"]),
        QAItem("Where does the marten live?", ["the cloud forests"]),  # same question again
        QAItem("Which mountain, Mount Ossebrand or not?", ["Mount Ossebrand"]),  # gives it away
        QAItem("How heavy is it?", ["700 grams"]),  # not in the passage
        QAItem("What animal is it?", ["glasswing marten"]),  # in the title
        QAItem("Which zoologist described it?", ["Perrin Achterberg"]),
        QAItem("Who first described it?", ["perrin achterberg"]),  # same answer again
        QAItem("What is it?", [" "]),
    ]
    kept, dropped = check_pairs(MARTEN, pairs)
    assert [p.answers for p in kept] == [["Mount Ossebrand"], ["Perrin Achterberg"]]
    assert dropped == {
        "duplicate question": 1,
        "question gives the answer away": 1,
        "answer not a span of the passage": 1,
        "answer is in the passage's title": 1,
        "duplicate answer": 1,
        "empty answer": 1,
    }
    kept, dropped = check_pairs(MARTEN, cloze_pairs(MARTEN), limit=3)
    assert len(kept) == 3 and dropped["over the limit of 3 questions per passage"] >= 1


def test_split_is_disjoint_fixed_by_content_and_never_empty():
    pairs, _ = check_pairs(MARTEN, cloze_pairs(MARTEN))
    reward, acceptance = split_sets(pairs, 0.5)
    assert len(reward) + len(acceptance) == len(pairs) and reward and acceptance
    assert not {p.question for p in reward} & {p.question for p in acceptance}
    assert split_sets(list(reversed(pairs)), 0.5)[1] == list(reversed(acceptance))  # order of input irrelevant
    assert [len(s) for s in split_sets(pairs[:2], 0.9)] == [1, 1]
    with pytest.raises(ValueError):
        split_sets(pairs[:1], 0.5)


def _documents(tmp_path, count=2):
    demo = json.loads(DEMO_DOCUMENTS.read_text())[:count]
    for entry in demo:
        (tmp_path / f"{entry['title'].replace(' ', '_')}.md").write_text(f"# {entry['title']}\n\n{entry['context']}\n")
    return demo


def test_user_questions_by_document_and_passage_in_three_formats(tmp_path):
    demo = _documents(tmp_path)
    documents = read_documents([tmp_path], 512, approx_tokens)
    first = documents.passages[0]
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"document": "Marrowick_Lantern_Regatta", "question": "Which town?", "answer": "Ostrevane"}) + "\n"
    )
    (tmp_path / "q.csv").write_text(
        "document,question,answer\nMarrowick_Lantern_Regatta.md,Who founded it?,Ilsabet Quorne|I. Quorne\n"
        "Marrowick_Lantern_Regatta,What colour?,purple\n"
    )
    (tmp_path / "q.yaml").write_text(f"- passage: {first.context_id}\n  question: When?\n  answers: ['1873']\n")
    files = [tmp_path / n for n in ("q.jsonl", "q.csv", "q.yaml")]
    given, dropped = assign_questions(files, documents)
    marrowick = next(p for p in documents.passages if p.title == demo[0]["title"])
    assert [q.answers for q in given[marrowick.context_id]] == [["Ostrevane"], ["Ilsabet Quorne", "I. Quorne"]]
    assert [q.question for q in given[first.context_id]][-1] == "When?"
    assert dropped == {"answer in no passage of its document": 1}

    (tmp_path / "bad.jsonl").write_text(json.dumps({"document": "handbook", "question": "Q?", "answer": "A"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl: row 1 names document 'handbook', which was not read"):
        assign_questions([tmp_path / "bad.jsonl"], documents)


def test_tau_uses_user_questions_instead_and_records_document_changes(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    demo = _documents(docs)
    (tmp_path / "q.jsonl").write_text(
        "".join(
            json.dumps({"document": "Marrowick_Lantern_Regatta", "question": q, "answer": a}) + "\n"
            for q, a in [("Which town?", "Ostrevane"), ("Who founded it?", "Ilsabet Quorne")]
        )
    )
    config = DocumentTauConfig(paths=[docs], questions=[tmp_path / "q.jsonl"], max_tokens=512)
    tau = write_tau(config, approx_tokens)
    by_title = {t.passage.title: t for t in tau.passages.values()}
    user, written = by_title[demo[0]["title"]], by_title[demo[1]["title"]]
    assert user.source == "user" and len(user.reward) == len(user.acceptance) == 1
    assert written.source == "written" and len(written.reward) + len(written.acceptance) == 10
    assert sum(written.dropped.values()) > 0  # the cloze writer's give-aways are counted

    ledger = Ledger(tmp_path / "ledger.jsonl")
    assert len(record_documents(ledger, tau)) == 2
    assert record_documents(ledger, write_tau(config, approx_tokens)) == []  # unchanged: nothing new
    changed = docs / "Dagny_Vorhelm.md"
    changed.write_text(changed.read_text().replace("1961", "1962"))
    [entry] = record_documents(ledger, write_tau(config, approx_tokens))
    assert entry["document"] == str(changed) and entry["previous_passage_ids"] == [written.passage.context_id]
    assert entry["passage_ids"] != entry["previous_passage_ids"]
    assert json.dumps(entry).count("Ostrevane") == 0  # the ledger holds τ's counts and hash, not its pairs


def test_reward_set_rewards_and_sealed_acceptance_set_decides(tmp_path):
    tau = [QAItem("r?", ["ra"]), QAItem("a1?", ["aa"]), QAItem("a2?", ["ab"])]
    base = ModelResult(["x", "x", "x"], [-5.0, -5.0, -5.0], [], [])
    cand = ModelResult(["ra", "x", "x"], [-1.0, -5.0, -5.0], [], [])  # learned the reward set only
    decider = Decider(AuditorConfig(ledger=tmp_path / "l.jsonl"), Ledger(tmp_path / "l.jsonl"), [], None)
    verdict = decider.decide(
        "ctx", tau, CandidateToJudge(self_edit=SELF_EDIT, candidate=CANDIDATE), base, cand, [], reward_count=1
    )
    assert verdict.reward == pytest.approx(4.0)
    assert not verdict.accepted and "loglik gain +0.000 is below" in verdict.reason  # judged on the sealed set
    assert verdict.candidate.loglik == pytest.approx(-5.0) and verdict.candidate.n_questions == 2
    unsplit = decider.decide("ctx", tau, CandidateToJudge(self_edit=SELF_EDIT, candidate=CANDIDATE), base, cand, [])
    assert unsplit.accepted and unsplit.reward == pytest.approx(4.0 / 3)


def test_answer_recall_is_containment_of_the_normalised_gold():
    assert answer_recall("It weighs about 640 grams.", ["640 grams"]) == 1.0
    assert answer_recall("The Copper Heron trophy", ["copper heron"]) == 1.0
    assert answer_recall("6400 grams", ["640"]) == 0.0
    assert answer_recall("anything", ["the"]) == 0.0


def test_model_written_pairs_are_parsed_then_checked_like_cloze_ones(tiny_model_dir):
    from auditor.model_question_writer import model_pairs, parse_pairs
    from library.models import load_model

    text = (
        "Sure! Question: Where does the marten live? Answer: Mount Ossebrand.\n"
        "question: How heavy is an adult? answer: about 700 grams\n"
        "Not a pair\nQuestion: Who described it?\n\nAnswer: Perrin Achterberg\nQuestion: Unanswered?"
    )
    pairs = parse_pairs(text)
    assert [(p.question, p.answers) for p in pairs] == [
        ("Where does the marten live?", ["Mount Ossebrand"]),
        ("How heavy is an adult?", ["about 700 grams"]),
        ("Who described it?", ["Perrin Achterberg"]),
    ]
    kept, dropped = check_pairs(MARTEN, pairs)
    assert len(kept) == 2 and dropped == {"answer not a span of the passage": 1}
    model, tokenizer = load_model(tiny_model_dir, "cpu")
    written = model_pairs(model, tokenizer, MARTEN, max_new_tokens=8)
    assert written == model_pairs(model, tokenizer, MARTEN, max_new_tokens=8)  # greedy: every run the same


def test_tau_written_by_a_model_goes_through_the_same_checks(tmp_path):
    _documents(tmp_path, 1)
    config = DocumentTauConfig(paths=[tmp_path], writer="model", max_tokens=512)
    with pytest.raises(ValueError, match="needs a writer"):
        write_tau(config, approx_tokens)
    pairs = [QAItem("Which town?", ["Ostrevane"]), QAItem("Which lake?", ["Lake Tessary"]), QAItem("Q?", ["Paris"])]
    [tau] = write_tau(config, approx_tokens, lambda passage: pairs).passages.values()
    assert sorted(q.answers[0] for q in tau.reward + tau.acceptance) == ["Lake Tessary", "Ostrevane"]
    assert tau.dropped == {"answer not a span of the passage": 1}


@pytest.mark.parametrize("flavour", ["openai", "anthropic"])
def test_an_api_model_writes_tau_at_temperature_0_and_a_failed_request_skips_only_its_passage(tmp_path, flavour):
    docs = tmp_path / "docs"
    docs.mkdir()
    _documents(docs, 3)
    key_file = tmp_path / "writer.key"
    key_file.write_text(FAKE_KEY + "\n")
    with FakeAPI(flavour) as api:
        writer_api = APIModelConfig(model=f"{flavour}:fake-model", base_url=api.base_url, key_file=key_file, retries=0)
        config = DocumentTauConfig(paths=[docs], writer="api", writer_api=writer_api, max_tokens=512)
        writer = pair_writer(config, lambda: pytest.fail("the api writer loads no local model"))
        api.script.append("500")  # the first passage's request fails
        tau = write_tau(config, approx_tokens, writer)
        bodies = api.generations()
    assert len(bodies) == 3
    assert all(body["temperature"] == 0.0 if flavour == "openai" else "temperature" not in body for body in bodies)
    assert all("quiz questions" in str(body["messages"]) for body in bodies)
    assert len(tau.passages) == 2  # the other two passages have τ
    [failed] = [p for p in tau.problems if "question writer failed" in p]
    assert failed.endswith("passage skipped") and FAKE_KEY not in failed
    for passage_tau in tau.passages.values():
        assert passage_tau.source == "written" and passage_tau.reward and passage_tau.acceptance
        for pair in passage_tau.reward + passage_tau.acceptance:  # kept only where the answer is a passage span
            assert pair.answers[0] in passage_tau.passage.text and pair.question.startswith("What ends")


def test_the_api_writer_needs_its_model_and_a_reachable_server(tmp_path):
    with pytest.raises(ValueError, match=r"--documents\.writer-api\.model"):
        DocumentTauConfig(paths=[tmp_path], writer="api")
    (tmp_path / "writer.key").write_text(FAKE_KEY)
    unreachable = APIModelConfig(
        model="openai:fake-model", base_url="http://127.0.0.1:9/v1", key_file=tmp_path / "writer.key", retries=0
    )
    config = DocumentTauConfig(paths=[tmp_path], writer="api", writer_api=unreachable)
    with pytest.raises(BackendUnavailable):  # found when the auditor starts, before any passage is read
        pair_writer(config, lambda: pytest.fail("no local model"))


def test_the_api_writer_asks_once_per_passage_with_a_cache_and_asks_again_where_it_failed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    _documents(docs, 3)
    key_file = tmp_path / "writer.key"
    key_file.write_text(FAKE_KEY)
    with FakeAPI("openai") as api:
        writer_api = APIModelConfig(model="openai:fake-model", base_url=api.base_url, key_file=key_file, retries=0)
        config = DocumentTauConfig(
            paths=[docs], writer="api", writer_api=writer_api, writer_cache=tmp_path / "auditor" / "pairs.jsonl"
        )
        api.script.append("500")
        launcher = write_tau(config, approx_tokens, pair_writer(config, lambda: pytest.fail("no local model")))
        auditor = write_tau(config, approx_tokens, pair_writer(config, lambda: pytest.fail("no local model")))
        asked = len(api.generations())
    assert asked == 3 + 1, "the second reader asks only for the passage whose request failed"
    assert len(launcher.passages) == 2 and len(auditor.passages) == 3
    for cid, tau in launcher.passages.items():  # the same pairs, read back rather than asked again
        assert (tau.reward, tau.acceptance) == (auditor.passages[cid].reward, auditor.passages[cid].acceptance)
