"""``seal adapt`` end to end: demo documents as Markdown files, three processes, τ written by the auditor."""

from __future__ import annotations

import json

from apps.cli import main
from apps.sequential_promote import PROMOTIONS_FILE
from library.datasets import DEMO_DOCUMENTS
from library.ledger import read_entries, verify_ledger
from protocol.artifacts import TRAINED_ON_STACK, ArtifactStore
from tests.test_end_to_end import _seal


def _write_documents(folder, count):
    folder.mkdir()
    for entry in json.loads(DEMO_DOCUMENTS.read_text())[:count]:
        (folder / f"{entry['title'].replace(' ', '_')}.md").write_text(f"# {entry['title']}\n\n{entry['context']}\n")


def _kinds(run_dir, kind):
    return [e["record"] for e in read_entries(run_dir / "ledger.jsonl") if e["kind"] == kind]


def _adapt(docs, run_dir, model_dir, *more):
    flags = ["--model", model_dir, "--run-dir", str(run_dir), "--epochs", "1", "--threads", "1", *more]
    done = _seal("adapt", str(docs), *flags, "--documents.max-tokens", "512")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


ACCEPT_ALL = ["--min-gain", "-100", "--max-retention-drop", "1000", "--max-earlier-drop", "1"]


def test_adapt_documents_end_to_end(tiny_model_dir, tmp_path):
    docs, run_dir = tmp_path / "docs", tmp_path / "run"
    _write_documents(docs, 2)
    kl_anchors = ["--anchors", "1", "--anchor-loss", "kl"]
    done = _adapt(docs, run_dir, tiny_model_dir, *ACCEPT_ALL, *kl_anchors, "--format", "self_qa")
    assert "2 documents, 2 passages, 2 with τ" in done.stdout
    results = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert {edit["format"] for r in results for edit in r["self_edits"]} == {"self_qa"}  # the teacher got --format
    report = (run_dir / "report.md").read_text()
    assert "Marrowick Lantern Regatta" in report and "Dagny Vorhelm" in report and "acceptance right" in report
    assert len([line for line in report.splitlines() if line.startswith("| ") and "/" in line]) == 2
    # The teacher's data is the passages alone; τ stayed with the auditor, split into reward and sealed sets.
    assert "question" not in (run_dir / "contexts.json").read_text()
    assert verify_ledger(run_dir / "ledger.jsonl").ok
    verdicts = _kinds(run_dir, "verdict")
    assert len(verdicts) == 2 and all(v["sets"]["reward"] >= 1 and v["sets"]["acceptance"] >= 1 for v in verdicts)
    assert all("fill in the blank" in v["per_question"][0]["question"] for v in verdicts)
    documents = _kinds(run_dir, "document")
    assert len(documents) == 2 and all(d["previous_passage_ids"] is None for d in documents)
    _check_sequential_promotion(run_dir, verdicts)
    store = ArtifactStore(run_dir / "store", writer=False)
    settings = [store.provenance(v["adapter_id"])["settings"] for v in verdicts]
    assert all((s["anchors"], s["anchor_loss"]) == (1, "kl") for s in settings), settings

    # A rerun after one document changed: the judged passages are skipped, the changed one adapted again, on top.
    first = {d["document"]: d for d in documents}
    changed = docs / "Dagny_Vorhelm.md"
    changed.write_text(changed.read_text().replace("1961", "1962"))
    _adapt(docs, run_dir, tiny_model_dir, *ACCEPT_ALL)
    assert len(_kinds(run_dir, "verdict")) == 3, "only the changed document's passage is adapted again"
    [change] = _kinds(run_dir, "document")[2:]
    assert change["document"] == str(changed.resolve())
    assert change["previous_passage_ids"] == first[str(changed.resolve())]["passage_ids"] != change["passage_ids"]
    assert verify_ledger(run_dir / "ledger.jsonl").ok


def _check_sequential_promotion(run_dir, verdicts):
    """The first passage's update was served before the second was adapted: trained on, judged against, replayed."""
    first, second = verdicts
    steps = [json.loads(line) for line in (run_dir / PROMOTIONS_FILE).read_text().splitlines()]
    assert [(s["context_id"], s["adapter_id"], s["outcome"]) for s in steps] == [
        (first["context_id"], first["adapter_id"], "promoted"),
        (second["context_id"], second["adapter_id"], "promoted"),
    ]
    assert steps[1]["stack"] == [first["adapter_id"], second["adapter_id"]]
    store = ArtifactStore(run_dir / "store", writer=False)
    assert store.provenance(first["adapter_id"])[TRAINED_ON_STACK] == []
    assert store.provenance(second["adapter_id"])[TRAINED_ON_STACK] == [first["adapter_id"]]
    # Judged against the served first update: the first passage's acceptance set replayed, before and after.
    [earlier] = second["earlier"]
    assert earlier["context_id"] == first["context_id"] and earlier["questions"] == first["sets"]["acceptance"]
    report = (run_dir / "report.md").read_text()
    assert "## Forgetting matrix" in report and "| passage | after 0 | after 1 | after 2 |" in report
    assert (run_dir / "forgetting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_question_file_naming_an_unknown_document_is_one_line_and_nothing_is_written(
    tiny_model_dir, tmp_path, capsys
):
    docs, run_dir = tmp_path / "docs", tmp_path / "run"
    _write_documents(docs, 1)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"document": "handbook.md", "question": "Q?", "answer": "A"}) + "\n")
    flags = [
        "--model",
        tiny_model_dir,
        "--run-dir",
        str(run_dir),
        "--documents.questions",
        json.dumps([str(questions)]),
    ]
    assert main(["adapt", str(docs), *flags]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "names document 'handbook.md', which was not read" in lines[0], lines
    assert not run_dir.exists()
