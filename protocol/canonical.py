"""Canonical JSON and content hashes: the one definition every hash, signature and short id is computed with.

Anything that is hashed or signed goes through :func:`canonical_json`, so the
teacher, student and auditor (and an offline verifier) get the same bytes for
the same value. Files meant for people (``provenance.json``, exemplar banks,
``adapter_config.json``) keep their indented layout and are not canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SHORT_ID_HEX = 16
"""Hex digits in a short id: 64 bits, ample for ids that only need to be unique within one run or store."""


def canonical_json(value: Any, ascii_only: bool = False) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, non-ASCII kept as is, NaN and infinities refused.

    Encode it as UTF-8 to hash or sign it. Raises ``ValueError`` for NaN/Infinity (not JSON: another reader
    could not reproduce the hash) and ``TypeError`` for values JSON cannot hold. ``ascii_only`` escapes
    non-ASCII characters (``\\u00e9``): only the self-edit hash uses it, as it always has, so that verdicts
    signed before this module existed still verify.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False)


def sha256_hex(data: str | bytes) -> str:
    """sha256 of ``data`` (a str is hashed as its UTF-8 bytes), as 64 hex digits."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def short_id(*parts: str | bytes) -> str:
    """The first 16 hex digits of the sha256 of ``parts`` joined with NUL bytes (str parts as UTF-8).

    NUL cannot occur in the texts these ids name, so ``short_id("ab", "c") != short_id("a", "bc")``.
    """
    joined = b"\0".join(p.encode("utf-8") if isinstance(p, str) else p for p in parts)
    return shorten(sha256_hex(joined))


def shorten(digest: str) -> str:
    """A hex digest cut to a short id's length, for names derived from a full hash (``teacher-<short>``)."""
    return digest[:SHORT_ID_HEX]
