"""Governance subcommands: keys, promotion, rollback, the served state, shadow answers, the ledger.

seal keys init --keys keys/
seal promote ADAPTER --ledger runs/x/ledger.jsonl --keys keys/
seal rollback [--to ADAPTER|base] --keys keys/
seal status --keys keys/
seal shadow ADAPTER --question "..." --keys keys/
seal ledger verify --ledger runs/x/ledger.jsonl [--keys keys/]
seal ledger repair --ledger runs/x/ledger.jsonl
seal ledger show ADAPTER --ledger runs/x/ledger.jsonl [--registry STORE/served/history.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from library.ledger import LedgerError, read_entries, repair_ledger, verify_ledger
from library.ledger_signatures import signature_problems
from protocol.clients import StudentClient
from protocol.messages import ServedStack, Verdict
from protocol.security import SecurityError, create_role_keys, write_role_folders
from protocol.signing import create_signing_key, load_verify_key, verify_signature
from protocol.transport import PeerUnavailable

DEFAULT_STUDENT = "tcp://127.0.0.1:5555"


def add_security_args(parser: argparse.ArgumentParser) -> None:
    """--keys / --insecure, shared by every command that opens a socket."""
    parser.add_argument("--keys", type=Path, help="Key folder made by 'seal keys init' (CURVE + verdict signing).")
    parser.add_argument("--insecure", action="store_true", help="Plain TCP without authentication; loopback only.")


def keys_folder(args: argparse.Namespace) -> Path | None:
    """The key folder to use, or None in insecure mode; neither given is an error."""
    if args.insecure:
        return None
    if args.keys is None:
        raise SecurityError("give --keys DIR (made by 'seal keys init') or --insecure (loopback only)")
    if not args.keys.is_dir():
        raise SecurityError(f"key folder {args.keys} does not exist; run 'seal keys init --keys {args.keys}'")
    return args.keys


def add_governance_commands(sub: Any) -> None:
    """Register keys, promote, rollback, status, shadow and ledger."""
    keys = sub.add_parser("keys", help="Key pairs for every role.").add_subparsers(dest="keys_command", required=True)
    init = keys.add_parser(
        "init",
        help="Create CURVE key pairs and the auditor's signing key (kept if present), and a folder per role "
        "(DIR/ROLE/) holding only what that role needs, to mount or copy alone.",
    )
    init.add_argument("--keys", type=Path, default=Path("keys"))

    promote = sub.add_parser("promote", help="Serve an adapter; only with the auditor's signed accepting verdict.")
    promote.add_argument("adapter", help="Adapter id or unique prefix.")
    promote.add_argument("--ledger", type=Path, required=True, help="The auditor's ledger holding the verdict.")
    rollback = sub.add_parser("rollback", help="Drop the top served adapter (or all above --to).")
    rollback.add_argument("--to", help="Adapter id/prefix to return to, or 'base'.")
    sub.add_parser("status", help="The served adapter stack and the verdicts that admitted it.")
    shadow = sub.add_parser("shadow", help="Answer questions with the served model and with a candidate on top.")
    shadow.add_argument("adapter")
    shadow.add_argument("--question", action="append", required=True, help="A live question (repeatable).")
    report = sub.add_parser(
        "shadow-report", help="Summarise a shadow log (seal serve --shadow-log): agreement and first differences."
    )
    report.add_argument("log", type=Path, help="The JSONL file seal serve --shadow-log wrote.")
    for name in ("promote", "rollback", "status", "shadow"):
        parser = sub.choices[name]
        parser.add_argument("--student", default=DEFAULT_STUDENT, help="The student's endpoint.")
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for the student.")
        add_security_args(parser)

    ledger = sub.add_parser("ledger", help="Inspect the auditor's ledger.")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_sub.add_parser("verify", help="Check the hash chain and every signature, offline.")
    verify.add_argument("--ledger", type=Path, required=True)
    verify.add_argument("--keys", type=Path, help="Key folder holding the auditor's public signing key.")
    repair = ledger_sub.add_parser(
        "repair", help="Remove a torn last line (a crash mid-append) and fix the head file; touches nothing else."
    )
    repair.add_argument("--ledger", type=Path, required=True)
    show = ledger_sub.add_parser("show", help="The full chain for one adapter (id or prefix).")
    show.add_argument("adapter")
    show.add_argument("--ledger", type=Path, required=True)
    show.add_argument("--registry", type=Path, help="The student's served/history.jsonl, for promotions.")


def run_governance(args: argparse.Namespace) -> int:
    """Run one governance subcommand; returns the exit code."""
    if args.command == "keys":
        written = create_role_keys(args.keys) + ([args.keys / "auditor.sign"] if create_signing_key(args.keys) else [])
        written += write_role_folders(args.keys)  # after both, as it copies from them
        print(f"{len(written)} key files written to {args.keys}" if written else f"keys in {args.keys} kept")
        return 0
    if args.command == "ledger":
        return {"verify": _verify, "repair": _repair, "show": _show}[args.ledger_command](args)
    if args.command == "shadow-report":
        return _shadow_report(args.log)
    return _talk_to_student(args)


def _shadow_report(log: Path) -> int:
    """How often the shadowed candidate agreed with the served stack on live requests, and where it did not."""
    from student.shadow_log import shadow_report

    if not log.exists():
        raise LedgerError(f"no shadow log at {log} (seal serve --shadow ADAPTER --shadow-log FILE writes one)")
    report = shadow_report(log)
    if not report["requests"]:
        print(f"{log}: no requests logged yet")
        return 0
    candidates = ", ".join(c[:12] for c in report["candidates"])
    print(f"{log}: {report['requests']} requests, candidate {candidates}: agreed on {report['agreement']:.0%}")
    table = Table(title="first differences: served stack vs candidate on top")
    for column in ("prompt", "served", "candidate"):
        table.add_column(column, overflow="fold")
    for diff in report["differences"]:
        table.add_row(diff["prompt"][-200:], diff["served"], diff["shadow"])
    Console().print(table)
    return 0


def _talk_to_student(args: argparse.Namespace) -> int:
    from apps.roles import student_client

    # A verdict to promote is checked before the student is asked anything: a forged one never leaves here.
    verdict = verified_verdict(args.ledger, args.adapter, keys_folder(args)) if args.command == "promote" else None
    client = student_client(args.student, "cli", args.timeout, keys_folder(args))
    try:
        _wait_for_student(client, args.timeout)
        if verdict is not None:
            reply = client.promote(verdict)
        elif args.command == "rollback":
            reply = client.rollback(args.to)
        elif args.command == "status":
            reply = client.describe_served()
        else:
            _print_shadow(args.question, client.answer_served(args.question, args.adapter).results)
            return 0
    finally:
        client.close()
    print(f"served (version {reply.version}): base" + "".join(f" + {a[:12]}" for a in reply.stack))
    return 0


def _wait_for_student(client: StudentClient, timeout_s: float) -> None:
    """A student just started (``seal student ... &``) is still loading its model: wait for it, up to the timeout."""
    from teacher.service import wait_for_peers

    try:
        wait_for_peers({"student": client}, timeout_s)
    except PeerUnavailable:
        why = f"the student at {client.endpoint} did not answer within {timeout_s:.0f}s"
        raise PeerUnavailable(why + ": is it running, with these keys?") from None


def promote_from_ledger(client: StudentClient, ledger: Path, adapter: str, keys: Path | None) -> ServedStack:
    """What ``seal promote`` does: the adapter's verdict, checked (:func:`verified_verdict`), sent to the student.

    The student checks the verdict again and refuses anything but a valid accepting one, signed by the auditor.
    """
    return client.promote(verified_verdict(ledger, adapter, keys))


def verified_verdict(ledger: Path, adapter: str, keys: Path | None) -> Verdict:
    """:func:`find_verdict`, from a ledger whose hash chain verifies, signed by the auditor whose key is in ``keys``.

    Checked before anything is sent, so a damaged ledger or a forged verdict is refused here, in one line.
    """
    if keys is None:
        raise SecurityError("promote checks the verdict's signature: give --keys DIR holding auditor.sign.pub")
    report = verify_ledger(ledger)
    if not report.ok:
        raise LedgerError(f"{ledger} does not verify: {report.problems[0]} ('seal ledger verify' lists every problem)")
    verdict = find_verdict(ledger, adapter)
    try:
        key = load_verify_key(keys)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"no usable auditor public key in {keys} ({exc}); run 'seal keys init'") from None
    verify_signature(verdict, key)
    return verdict


def find_verdict(ledger: Path, adapter: str) -> Verdict:
    """The newest verdict on ``adapter`` (id or unique prefix) recorded in the ledger.

    The verdict itself must be about that adapter, and so must the record holding it: a record naming one
    adapter with another's verdict would otherwise promote the other.
    """
    entries = [e for e in read_entries(ledger) if e["kind"] == "verdict" and "verdict" in e["record"]]
    matches = [e["record"] for e in entries if _mentions_adapter(e["record"], adapter)]
    if not matches:
        raise LedgerError(f"no verdict on adapter {adapter!r} in {ledger}")
    mixed = next((r for r in matches if r.get("adapter_id") != r["verdict"].get("adapter_id")), None)
    if mixed is not None:
        named, judged = str(mixed.get("adapter_id"))[:12], str(mixed["verdict"].get("adapter_id"))[:12]
        raise LedgerError(f"a verdict record in {ledger} names adapter {named} but holds the verdict on {judged}")
    if len({r["adapter_id"] for r in matches}) > 1:
        raise LedgerError(f"{adapter!r} is the prefix of more than one adapter in {ledger}; give more of the id")
    # The signed verdict in a record cannot hold its own entry's hash: point it at that entry here, so the
    # registry's served stack names the ledger entry behind each promotion (the signature does not cover it).
    entry = next(e for e in reversed(entries) if e["record"] is matches[-1])
    return Verdict.model_validate(matches[-1]["verdict"]).model_copy(update={"ledger_entry": entry["hash"]})


def _mentions_adapter(record: dict[str, Any], adapter: str) -> bool:
    """A verdict record whose own adapter id, or its verdict's, starts with ``adapter``."""
    ids = (record.get("adapter_id"), record["verdict"].get("adapter_id"))
    return any(isinstance(a, str) and a.startswith(adapter) for a in ids)


def _verify(args: argparse.Namespace) -> int:
    """Read-only: the chain and head file, then (with --keys) every verdict's signature and its record."""
    report = verify_ledger(args.ledger)
    problems = list(report.problems)
    if args.keys is not None:
        problems += signature_problems(args.ledger, load_verify_key(args.keys))
    print(f"{args.ledger}: {report.entries} entries, " + ("verified" if not problems else "NOT VERIFIED"))
    for problem in problems:
        print(f"  {problem}")
    for warning in report.warnings:
        print(f"  warning: {warning}")
    return 0 if not problems else 1


def _repair(args: argparse.Namespace) -> int:
    """Undo what a crash mid-append leaves, and say exactly what was removed; refuse anything else."""
    report = repair_ledger(args.ledger)
    if not report.ok:
        print(f"{args.ledger}: NOT REPAIRED, nothing changed: this is not what a crash leaves; look at it")
    elif report.done:
        print(f"{args.ledger}: repaired")
    else:
        print(f"{args.ledger}: nothing to repair")
    for line in report.problems or report.done:
        print(f"  {line}")
    return 0 if report.ok else 1


def _show(args: argparse.Namespace) -> int:
    entries = [e for e in read_entries(args.ledger) if _mentions(e["record"], args.adapter)]
    if args.registry is not None:
        entries += [e for e in read_entries(args.registry) if _mentions(e["record"], args.adapter)]
    for entry in entries:
        print(json.dumps(entry, indent=2))
    return 0 if entries else 1


def _mentions(record: dict[str, Any], adapter: str) -> bool:
    """A verdict on the adapter, or a registry change whose stack held it."""
    ids = [record.get("adapter_id", ""), *record.get("before", []), *record.get("after", [])]
    return any(str(a).startswith(adapter) for a in ids)


def _print_shadow(questions: list[str], results: list[Any]) -> None:
    table = Table(title="shadow: served model vs candidate on top")
    for column in ("question", "served", f"with {results[-1].adapter_id[:12]}"):
        table.add_column(column)
    for row in zip(questions, results[0].answers, results[-1].answers, strict=True):
        table.add_row(*row)
    Console().print(table)
