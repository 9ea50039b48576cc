"""Waiting for the launcher's promotions between contexts (``seal adapt --promote accepted``).

Only the CLI's key may promote, and the teacher holds no such key; so when each accepted update must be
served before the next passage is adapted (continual adaptation), the launcher promotes it and appends a
line naming the context to a JSON-lines file, and the teacher waits here for that line before it asks the
student for the served stack and trains the next candidate on top of it.
"""

from __future__ import annotations

import time
from pathlib import Path

from library.jsonl import read_jsonl


class PromotionTimeout(TimeoutError):
    """The launcher did not record its promotion step for a finished context in time."""


def wait_for_promotions(log: Path, context_ids: list[str], timeout_s: float, poll_s: float = 0.2) -> None:
    """Return once ``log`` has a line for each of ``context_ids``; PromotionTimeout names the setting otherwise."""
    until = time.monotonic() + timeout_s
    while True:
        missing = set(context_ids) - {r.get("context_id") for r in read_jsonl(log)}
        if not missing:
            return
        if time.monotonic() > until:
            raise PromotionTimeout(
                f"no promotion step recorded in {log} for context {sorted(missing)[0][:12]} within {timeout_s:.0f}s "
                "(raise --promotion-timeout-s, or run without --promotion-log)"
            )
        time.sleep(poll_s)
