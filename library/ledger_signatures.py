"""A ledger checked against the auditor's signing key: every verdict signed, every record agreeing with it.

The hash chain protects a record only from someone who cannot rewrite the file
from that entry on, head file included; the auditor's signature protects the
verdict even then. So every verdict entry must carry a verdict signed by the
key, and the fields of its record that restate the verdict (adapter, context,
accepted, reason, and the self-edit judged, through its sha256) must agree with
what was signed. The rest of a record (scores per question, training settings)
is evidence the verdict was based on, covered by the chain.

Read-only, and it goes on past damage: lines that do not parse are skipped here
(:func:`library.ledger.verify_ledger` reports them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from library.ledger import parsed_lines
from protocol.canonical import canonical_json, sha256_hex
from protocol.messages import Verdict
from protocol.signing import VerdictRefused, verify_signature

RESTATED = ("adapter_id", "context_id", "accepted", "reason")
"""Record fields that repeat a field of the signed verdict, and must equal it."""


def signature_problems(path: Path, key: Ed25519PublicKey) -> list[str]:
    """One ``line N: ...`` per verdict that is unsigned, not signed by ``key``, or contradicted by its record."""
    problems = []
    for lineno, entry in parsed_lines(path):
        if entry["kind"] == "verdict" or "verdict" in entry["record"]:
            problems += [f"line {lineno}: {p}" for p in record_problems(entry["kind"], entry["record"], key)]
    return problems


def record_problems(kind: str, record: dict[str, Any], key: Ed25519PublicKey) -> list[str]:
    """What is wrong with one record that holds (or, being a verdict entry, must hold) a signed verdict."""
    data = record.get("verdict")
    if not isinstance(data, dict):
        return ["a verdict entry without its signed verdict (removed?)"]
    try:
        verdict = Verdict.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return [f"the recorded verdict is malformed ({where}: {error['msg']})"]
    try:
        verify_signature(verdict, key)
    except VerdictRefused as exc:
        return [str(exc)]
    problems = _restatement_problems(record, verdict)
    if kind == "verdict":
        problems += _self_edit_problems(record, verdict)
    return problems


def _restatement_problems(record: dict[str, Any], verdict: Verdict) -> list[str]:
    return [
        f"record field {name!r} is {record[name]!r} but the signed verdict says {getattr(verdict, name)!r}"
        for name in RESTATED
        if name in record and record[name] != getattr(verdict, name)
    ]


def _self_edit_problems(record: dict[str, Any], verdict: Verdict) -> list[str]:
    """The recorded self-edit (whose text teacher versions train on) must be the one the verdict signed."""
    if not verdict.self_edit_sha256:
        return ["the signed verdict does not name its self-edit's sha256, so the recorded self-edit is unbound"]
    edit = record.get("self_edit")
    if not isinstance(edit, dict):
        return ["the record has no self-edit, but the verdict signed one"]
    if sha256_hex(canonical_json(edit, ascii_only=True)) != verdict.self_edit_sha256:  # as self_edit_sha256 hashes
        return ["the recorded self-edit is not the one the verdict signed (its sha256 differs)"]
    return []
