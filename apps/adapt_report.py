"""``seal adapt``'s closing report: per passage the verdict, reward-set and acceptance-set scores, and retention.

Built from the run folder alone: ``results.jsonl`` (the teacher's outcomes) and the auditor's ``ledger.jsonl``
(each verdict's per-question detail, whose first ``sets.reward`` rows are the reward set and the rest the
sealed acceptance set). Right answers are counted by answer recall (the normalised gold answer contained in
the normalised answer). Written as ``report.md`` in the run folder and returned as a table for the terminal,
with the forgetting matrix of the updates this run promoted (``promotions.jsonl``) and its heatmap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from apps.forgetting import ForgettingRecord, forgetting_matrix, plot_matrix
from apps.sequential_promote import promoted_stack
from auditor.grading import answer_recall
from library.ledger import read_entries
from protocol.messages import Context
from teacher.loop import load_outcomes

FORGETTING_PNG = "forgetting.png"

COLUMNS = [
    "passage",
    "verdict",
    "reward set log-lik",
    "reward set right",
    "acceptance log-lik",
    "acceptance right",
    "retention drop",
]


@dataclass(frozen=True)
class SetScores:
    """One question set's mean gold log-likelihood and right-answer count, base and candidate."""

    n: int
    base_loglik: float
    cand_loglik: float
    base_right: int
    cand_right: int


@dataclass(frozen=True)
class PassageRow:
    """One passage's line of the report (its best candidate: an accepted one, else the highest reward)."""

    title: str
    verdict: str
    reward: SetScores | None
    acceptance: SetScores | None
    retention_drop: float | None

    def cells(self) -> list[str]:
        """The row as text, in :data:`COLUMNS` order."""
        if self.acceptance is None:
            return [self.title, self.verdict, *[""] * (len(COLUMNS) - 2)]
        reward = [_loglik(self.reward), _right(self.reward)] if self.reward else ["-", "-"]
        acceptance = [_loglik(self.acceptance), _right(self.acceptance)]
        return [self.title, self.verdict, *reward, *acceptance, f"{self.retention_drop:+.3f}"]


def passage_rows(run_dir: Path, contexts: list[Context]) -> list[PassageRow]:
    """A row per context, in order; a context not yet adapted says so."""
    outcomes = load_outcomes(run_dir / "results.jsonl")
    entries = read_entries(run_dir / "ledger.jsonl")
    verdicts = {e["record"]["adapter_id"]: e["record"] for e in entries if e["kind"] == "verdict"}
    rows = []
    for context in contexts:
        title = context.title[:40] or context.context_id
        outcome = outcomes.get(context.context_id)
        if outcome is None or not outcome.verdicts:
            rows.append(PassageRow(title, "not adapted" if outcome is None else "no candidate", None, None, None))
            continue
        best = max(outcome.verdicts, key=lambda v: (v.accepted, v.reward))
        record = verdicts.get(best.adapter_id, {})
        reward, acceptance = _set_scores(record)
        verdict = "accepted" if best.accepted else "rejected"
        rows.append(PassageRow(title, f"{verdict} ({best.adapter_id[:8]})", reward, acceptance, best.retention_drop))
    return rows


def forgetting_records(run_dir: Path, contexts: list[Context], stack: list[str]) -> list[ForgettingRecord]:
    """The forgetting matrix's cells from the ledger: update j is ``stack[j - 1]``'s accepting verdict.

    That verdict gives its own passage's acceptance-set right answers after update j (the candidate) and
    before it (the served stack, after update j - 1), and each earlier passage's after update j (its
    ``earlier`` records, the replay of their acceptance sets). Passages are named by their titles.
    """
    titles = {c.context_id: c.title[:40] or c.context_id[:12] for c in contexts}
    verdicts = {e["record"]["adapter_id"]: e["record"] for e in read_entries(run_dir / "ledger.jsonl")
                if e["kind"] == "verdict" and e["record"].get("accepted")}  # fmt: skip
    records = []
    for update, adapter_id in enumerate(stack, start=1):
        record = verdicts.get(adapter_id)
        acceptance = _set_scores(record)[1] if record else None
        if record is None or acceptance is None:
            continue  # not judged by this auditor on τ it holds: no cells
        own = titles.get(record["context_id"], record["context_id"][:12])
        records.append(ForgettingRecord(update - 1, own, acceptance.base_right, acceptance.n))
        records.append(ForgettingRecord(update, own, acceptance.cand_right, acceptance.n))
        for p in record.get("earlier", []):
            name = titles.get(p["context_id"], p["context_id"][:12])
            records.append(ForgettingRecord(update, name, p["candidate_right"], p["questions"]))
    return records


def write_report(run_dir: Path, contexts: list[Context]) -> Table:
    """Write ``report.md`` (and ``forgetting.png`` when updates were promoted) for ``contexts``; return the table."""
    rows = passage_rows(run_dir, contexts)
    accepted = sum(r.verdict.startswith("accepted") for r in rows)
    caption = (
        f"{accepted}/{len(rows)} passages accepted · gold log-likelihood per token and right answers "
        "(answer recall), base → candidate"
    )
    lines = ["# seal adapt", "", caption, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines += ["", *_forgetting_section(run_dir, contexts)]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = Table(title="seal adapt: per passage", caption=caption)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("passage", "verdict") else "right")
    for row in rows:
        table.add_row(*row.cells())
    return table


def _forgetting_section(run_dir: Path, contexts: list[Context]) -> list[str]:
    """The matrix as Markdown lines (and the heatmap written beside it), or a line saying why there is none."""
    records = forgetting_records(run_dir, contexts, promoted_stack(run_dir))
    if not records:
        return ["No update was promoted in this run (--promote none, or nothing accepted): no forgetting matrix."]
    matrix = forgetting_matrix(records)
    plot_matrix(matrix, run_dir / FORGETTING_PNG)
    return [
        "## Forgetting matrix",
        "",
        "Right answers (answer recall) on each passage's sealed acceptance set after update j (0: before the "
        f"first); a passage's cell before its own update is the model it was judged against. Heatmap: {FORGETTING_PNG}",
        "",
        matrix.markdown(),
    ]


def _set_scores(record: dict[str, Any]) -> tuple[SetScores | None, SetScores | None]:
    """(reward set, acceptance set) from a verdict's per-question detail; without a split, τ is one acceptance set."""
    questions = record.get("per_question")
    if not questions:
        return None, None
    n = record.get("sets", {}).get("reward", 0)
    return (_scores(questions[:n]) if n else None), _scores(questions[n:])


def _scores(questions: list[dict[str, Any]]) -> SetScores:
    def mean(key: str) -> float:
        return sum(q[key] for q in questions) / len(questions)

    def right(key: str) -> int:
        return int(sum(answer_recall(q[key], q["gold"]) for q in questions))

    logliks = mean("base_loglik"), mean("candidate_loglik")
    return SetScores(len(questions), *logliks, right("base_answer"), right("candidate_answer"))


def _loglik(s: SetScores) -> str:
    return f"{s.base_loglik:.2f} → {s.cand_loglik:.2f}"


def _right(s: SetScores) -> str:
    return f"{s.base_right}/{s.n} → {s.cand_right}/{s.n}"
