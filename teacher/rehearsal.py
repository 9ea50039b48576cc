"""Rehearsal: earlier accepted self-edits mixed into a new candidate's training, against forgetting.

The seed's replay buffer, after SEAL's own continual experiment (its main limitation: accuracy on earlier
passages falls with every new self-edit). A sample of the self-edits the auditor accepted for earlier
passages is sent with each new job; the student adds their lines to the job's training sequences and records
their hashes in the adapter's provenance, and the auditor judges the candidate only if it accepted each one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from protocol.messages import SelfEdit, Verdict


def accepted_self_edits(self_edits: list[SelfEdit], verdicts: list[Verdict]) -> list[SelfEdit]:
    """The self-edits (in order) with at least one accepting verdict."""
    accepted = {v.self_edit_id for v in verdicts if v.accepted}
    return [e for e in self_edits if e.self_edit_id in accepted]


def rehearsal_sample(pool: Iterable[SelfEdit], n: int, seed: int, context_id: str) -> list[SelfEdit]:
    """``n`` of the earlier accepted self-edits in ``pool`` (all when fewer), drawn for ``context_id``.

    The draw depends only on the seed, the context and the pool, so a resumed run draws the same sample.
    """
    candidates = list({e.self_edit_id: e for e in pool}.values())
    if n <= 0 or not candidates:
        return []
    return random.Random(f"{seed}:{context_id}").sample(candidates, min(n, len(candidates)))
