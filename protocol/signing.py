"""Signed verdicts: the auditor signs each verdict (Ed25519); the student checks before it promotes.

The signature covers the whole verdict (adapter id, self-edit hash, scores,
decision, ledger entry) in a canonical JSON form, so changing one byte, or
presenting the verdict for another adapter, breaks it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.canonical import canonical_json
from protocol.messages import Verdict

SIGNING_KEY = "auditor.sign"
VERIFY_KEY = "auditor.sign.pub"


class VerdictRefused(Exception):
    """A verdict that must not lead to a promotion: unsigned, forged, altered, for another adapter, or rejecting."""


def create_signing_key(folder: Path) -> bool:
    """Write the auditor's Ed25519 key pair unless it exists; True if written."""
    private_path = folder / SIGNING_KEY
    if private_path.exists():
        return False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.write_bytes(pem)
    private_path.chmod(0o600)
    (folder / VERIFY_KEY).write_text(public_hex(key.public_key()) + "\n")
    return True


def load_signing_key(folder: Path) -> Ed25519PrivateKey:
    """The auditor's signing key from ``folder``; a key of another kind is refused, naming the file."""
    key = serialization.load_pem_private_key((folder / SIGNING_KEY).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{folder / SIGNING_KEY} holds a {type(key).__name__}, not an Ed25519 signing key")
    return key


def load_verify_key(folder: Path) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex((folder / VERIFY_KEY).read_text().strip()))


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def verdict_payload(verdict: Verdict) -> bytes:
    """The bytes a signature covers: every field but the signature and the ledger pointer (written after)."""
    fields = verdict.model_dump(mode="json", exclude={"signature", "ledger_entry"})
    return canonical_json(fields).encode("utf-8")


def sign_verdict(verdict: Verdict, key: Ed25519PrivateKey) -> Verdict:
    signed = verdict.model_copy(update={"signer": public_hex(key.public_key())})
    return signed.model_copy(update={"signature": key.sign(verdict_payload(signed)).hex()})


def verify_signature(verdict: Verdict, key: Ed25519PublicKey) -> None:
    """Raise VerdictRefused unless ``verdict`` carries ``key``'s signature over exactly these contents."""
    if not verdict.signature:
        raise VerdictRefused("the verdict is not signed")
    try:
        key.verify(bytes.fromhex(verdict.signature), verdict_payload(verdict))
    except (InvalidSignature, ValueError):
        raise VerdictRefused("the verdict's signature is not the auditor's (forged or altered)") from None


def check_verdict(verdict: Verdict, key: Ed25519PublicKey, adapter_id: str) -> None:
    """Raise VerdictRefused unless ``verdict`` is an accepting verdict on ``adapter_id`` signed by ``key``."""
    verify_signature(verdict, key)
    if verdict.adapter_id != adapter_id:
        raise VerdictRefused(f"the verdict is for adapter {verdict.adapter_id[:12]}, not {adapter_id[:12]}")
    if not verdict.accepted:
        raise VerdictRefused(f"the auditor rejected adapter {adapter_id[:12]}: {verdict.reason}")
    if verdict.metric == "arc_exact":
        raise VerdictRefused(
            f"adapter {adapter_id[:12]} is a few-shot test-time adapter (judged on one ARC task): it is never served"
        )
