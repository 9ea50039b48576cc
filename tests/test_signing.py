"""Signed verdicts: any change, any other adapter, any other key, and any rejection are refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.signing import (
    VerdictRefused,
    check_verdict,
    create_signing_key,
    load_signing_key,
    load_verify_key,
    sign_verdict,
)
from tests.examples import VERDICT

ADAPTER = VERDICT.adapter_id


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    assert create_signing_key(folder)
    assert not create_signing_key(folder), "an existing key must be kept"
    return load_signing_key(folder), load_verify_key(folder)


def test_a_signed_accepting_verdict_is_accepted(keys):
    private, public = keys
    check_verdict(sign_verdict(VERDICT, private), public, ADAPTER)


@pytest.mark.parametrize(
    "change",
    [{"reward": 0.71}, {"accepted": True, "reason": "gain!"}, {"self_edit_sha256": "00" * 32}, {"retention_drop": 0.0}],
    ids=["reward", "reason", "self-edit-hash", "retention"],
)
def test_an_altered_verdict_is_refused(keys, change):
    private, public = keys
    altered = sign_verdict(VERDICT, private).model_copy(update=change)
    with pytest.raises(VerdictRefused, match="forged or altered"):
        check_verdict(altered, public, ADAPTER)


def test_one_flipped_byte_in_the_signature_is_refused(keys):
    private, public = keys
    signed = sign_verdict(VERDICT, private)
    flipped = signed.signature[:-1] + ("0" if signed.signature[-1] != "0" else "1")
    with pytest.raises(VerdictRefused):
        check_verdict(signed.model_copy(update={"signature": flipped}), public, ADAPTER)


def test_a_verdict_replayed_for_another_adapter_is_refused(keys):
    private, public = keys
    with pytest.raises(VerdictRefused, match="not"):
        check_verdict(sign_verdict(VERDICT, private), public, "ef" * 32)


def test_a_verdict_signed_by_another_key_is_refused(keys):
    _, public = keys
    with pytest.raises(VerdictRefused, match="not the auditor's"):
        check_verdict(sign_verdict(VERDICT, Ed25519PrivateKey.generate()), public, ADAPTER)


def test_unsigned_and_rejecting_verdicts_are_refused(keys):
    private, public = keys
    with pytest.raises(VerdictRefused, match="not signed"):
        check_verdict(VERDICT, public, ADAPTER)
    rejecting = sign_verdict(VERDICT.model_copy(update={"accepted": False, "reason": "too small"}), private)
    with pytest.raises(VerdictRefused, match="rejected"):
        check_verdict(rejecting, public, ADAPTER)


def test_the_self_edit_hash_is_the_one_verdicts_were_signed_with():
    """Verdicts signed before canonical JSON was shared hashed the self-edit with non-ASCII escaped: so must we."""
    import hashlib
    import json

    from protocol.artifacts import self_edit_sha256
    from tests.examples import SELF_EDIT

    edit = SELF_EDIT.model_copy(update={"text": "Café — “Regatta”"})
    earlier = json.dumps(edit.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert self_edit_sha256(edit) == hashlib.sha256(earlier.encode()).hexdigest()


def test_a_few_shot_adapters_accepting_verdict_never_promotes_it():
    """An ARC test-time adapter is judged on one task; its signed accepting verdict must not put it in service."""
    private = Ed25519PrivateKey.generate()
    fewshot = VERDICT.model_copy(update={"metric": "arc_exact", "accepted": True})
    with pytest.raises(VerdictRefused, match="few-shot"):
        check_verdict(sign_verdict(fewshot, private), private.public_key(), ADAPTER)
