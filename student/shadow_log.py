"""Shadow deployment for ``seal serve --shadow ADAPTER``: a candidate answers the live requests beside the served
stack, its answers never reaching the caller; both are logged side by side (JSONL) and summarised.

The candidate runs as the served stack with the candidate on top (what promoting it would serve), with the
request's own prompt and sampling parameters (and seed), in the same batching worker, after the caller's
request has been queued; its answer is written to the log when both answers are complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from library.jsonl import append_jsonl, read_jsonl
from student.sampling import Generation


class ShadowLog:
    """Appends one record per live request: the prompt, the served answer, the candidate's answer."""

    def __init__(self, path: Path, candidate: str):
        self.path, self.candidate = path, candidate
        self._lock = threading.Lock()

    def record(self, served_version: str, prompt: str, served: str, shadow: Generation) -> None:
        """Log ``served`` beside the shadow's answer, once it is complete (in a thread: the caller never waits)."""

        def write() -> None:
            candidate = shadow.text()
            record = {
                "time": time.time(),
                "served_version": served_version,
                "candidate": self.candidate,
                "prompt": prompt,
                "served": served,
                "shadow": candidate,
                "agree": candidate == served,
            }
            with self._lock:
                append_jsonl(self.path, record)

        threading.Thread(target=write, name="seal-serve-shadow", daemon=True).start()

    def watch(self, served_version: str, prompt: str, deltas: Iterator[Any], text_of, shadow: Generation):
        """Pass a stream's chunks through unchanged, and log its whole text against the shadow's at its end."""
        parts: list[str] = []
        for chunk in deltas:
            parts.append(text_of(chunk))
            yield chunk
        self.record(served_version, prompt, "".join(parts), shadow)


def shadow_report(path: Path) -> dict[str, Any]:
    """Agreement of the candidate with the served stack over a shadow log, and its first differences."""
    records = read_jsonl(path)
    differ = [r for r in records if not r["agree"]]
    return {
        "requests": len(records),
        "candidates": sorted({r["candidate"] for r in records}),
        "agreement": (len(records) - len(differ)) / len(records) if records else None,
        "differences": [{k: r[k] for k in ("prompt", "served", "shadow")} for r in differ[:5]],
    }
