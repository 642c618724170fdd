"""Signed `received` events: what is accepted, what is refused, and the keys' files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from empath.core import errors, settings, signing

SUBJECT = "empath.received"
DATA = b'{"kind": "received", "id": "m1"}'


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return signing.ensure_keys(tmp_path / "credentials")


def test_the_spool_takes_what_ingress_and_itself_signed(keys: dict[str, Path]) -> None:
    ingress = signing.load_private(keys[signing.INGRESS_KEY])
    spool = signing.load_private(keys[signing.SPOOL_KEY])
    config = settings.load(
        environment=False,
        event_signing_key_file=keys[signing.SPOOL_KEY],
        event_trusted_keys_file=keys[signing.TRUSTED_KEYS],
    )
    verifier = signing.verifier_of(config, spool)
    assert verifier is not None
    for signer in (ingress, spool):
        header = {signing.HEADER: signer.sign(SUBJECT, DATA)}
        assert verifier.verify(SUBJECT, DATA, header) == signing.key_id(signer.public)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (None, "missing"),
        ({}, "missing"),
        ({signing.HEADER: "hmac abc def"}, "malformed"),
        ({signing.HEADER: "ed25519 only-two"}, "malformed"),
        ({signing.HEADER: "ed25519 " + "x" * 300 + " y"}, "malformed"),
    ],
)
def test_a_missing_or_malformed_signature_is_refused(
    keys: dict[str, Path], headers: dict[str, str] | None, reason: str
) -> None:
    verifier = signing.Verifier(
        {signing.key_id(k): k for k in signing.load_public(keys[signing.TRUSTED_KEYS])}
    )
    with pytest.raises(signing.Unauthentic) as refused:
        verifier.verify(SUBJECT, DATA, headers)
    assert refused.value.reason == reason


def test_a_signature_by_another_key_or_of_other_bytes_is_refused(keys: dict[str, Path]) -> None:
    ingress = signing.load_private(keys[signing.INGRESS_KEY])
    verifier = signing.Verifier({signing.key_id(ingress.public): ingress.public})
    stranger = signing.Signer(ed25519.Ed25519PrivateKey.generate())
    cases = [
        ({signing.HEADER: stranger.sign(SUBJECT, DATA)}, DATA, "unknown-key"),
        # Ingress's signature of one event does not cover another, nor another subject.
        ({signing.HEADER: ingress.sign(SUBJECT, DATA)}, DATA.replace(b"m1", b"m2"), "bad"),
        ({signing.HEADER: ingress.sign("empath.delivery.jobs", DATA)}, DATA, "bad"),
    ]
    kid = signing.key_id(ingress.public)
    cases.append(({signing.HEADER: f"ed25519 {kid} not*base64"}, DATA, "bad"))
    for headers, data, reason in cases:
        with pytest.raises(signing.Unauthentic) as refused:
            verifier.verify(SUBJECT, data, headers)
        assert refused.value.reason == reason


def test_keys_are_made_once_kept_private_and_trusted_side_by_side(tmp_path: Path) -> None:
    directory = tmp_path / "credentials"
    first = signing.ensure_keys(directory)
    before = first[signing.INGRESS_KEY].read_bytes()
    assert signing.ensure_keys(directory)[signing.INGRESS_KEY].read_bytes() == before
    for name in (signing.INGRESS_KEY, signing.SPOOL_KEY):
        assert stat.S_IMODE(first[name].stat().st_mode) == 0o600
    # Rotation: the old and the new public key, one after the other, are both trusted.
    new = signing.Signer(ed25519.Ed25519PrivateKey.generate())
    trusted = first[signing.TRUSTED_KEYS]
    trusted.write_bytes(trusted.read_bytes() + signing.public_pem(new.public))
    assert len(signing.load_public(trusted)) == 2


def test_ingress_and_the_spool_do_not_start_without_their_keys_unless_signing_is_off(
    keys: dict[str, Path], tmp_path: Path
) -> None:
    bare = settings.load(environment=False)
    with pytest.raises(errors.ConfigurationError, match="EMPATH_EVENT_SIGNING_KEY_FILE"):
        signing.required_signer(bare, "ingress")
    signer = signing.required_signer(
        settings.load(environment=False, event_signing_key_file=keys[signing.SPOOL_KEY]), "spool"
    )
    with pytest.raises(errors.ConfigurationError, match="EMPATH_EVENT_TRUSTED_KEYS_FILE"):
        signing.verifier_of(bare, signer)
    off = settings.load(environment=False, event_signing="off")
    assert signing.required_signer(off, "ingress") is None
    assert signing.verifier_of(off, None) is None
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(errors.ConfigurationError, match="EMPATH_EVENT_SIGNING_KEY_FILE"):
        signing.load_private(garbage)
    with pytest.raises(errors.ConfigurationError, match="EMPATH_EVENT_TRUSTED_KEYS_FILE"):
        signing.load_public(garbage)
    with pytest.raises(errors.ConfigurationError, match="EMPATH_EVENT_SIGNING_KEY_FILE"):
        settings.load(environment=False, event_signing_key_file=tmp_path / "none")
