"""What each role may ask of each server: the CURVE key says who is calling, this table what it may ask.

A secure server learns the caller's role from its ZAP handler (the connection's User-Id, see
:mod:`protocol.security`), never from the message header. :func:`authorise` refuses, with a typed
``forbidden`` error, a request its caller's role may not send, and a header whose ``sender`` is
not the role of the key that sent it.
"""

from __future__ import annotations

from protocol.codec import Header, ProtocolError
from protocol.messages import Role

EVERY_ROLE = frozenset({"ping"})  # liveness is no secret

# channel -> caller role -> the request types it may send (beside a ping)
PERMISSIONS: dict[str, dict[Role, frozenset[str]]] = {
    "student": {
        # Both read the served stack (continual adaptation trains and judges on top of it); only the CLI changes it.
        "teacher": frozenset({"describe_student", "apply_self_edits", "describe_served", "train_task"}),
        "auditor": frozenset({"describe_student", "answer_questions", "describe_served", "answer_task"}),
        "cli": frozenset({"promote", "rollback", "describe_served", "answer_served"}),
    },
    "auditor": {
        # The CLI asks nothing of the auditor: a CLI key must not be able to append verdicts to its ledger.
        "teacher": frozenset(
            {"review_self_edits", "judge_candidates", "record_teacher_version", "judge_task", "grade_in_context"}
        ),
    },
}


def authorise(channel: str, caller: str | None, header: Header) -> None:
    """Raise ProtocolError("forbidden") unless ``caller`` may send ``header.type`` on ``channel``.

    ``caller`` is the authenticated role of the connection. It is None over ``--insecure`` (plain
    TCP on loopback) and in process, where nothing is authenticated: every request is let through
    there, as before roles were bound to keys.
    """
    if caller is None:
        return
    if header.sender != caller:
        raise ProtocolError(
            "forbidden", f"the header names the {header.sender} but the key is the {caller}'s", "header.sender"
        )
    allowed = EVERY_ROLE | PERMISSIONS.get(channel, {}).get(caller, frozenset())  # type: ignore[call-overload]
    if header.type not in allowed:
        raise ProtocolError("forbidden", f"the {caller} may not send {header.type} to the {channel}", "type")
