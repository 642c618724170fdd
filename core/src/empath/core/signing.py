"""Signed events: the spool queues a `received` only if ingress (or the spool itself) signed it.

Why. NATS permissions (`natsauth`) let only ingress and the spool publish `empath.received`,
but a password can leak, and whoever holds ingress's could then queue mail to anyone (an open
relay past every SMTP check). So each `received` carries a signature, and the spool checks it
before it records anything.

Why Ed25519 rather than an HMAC with one shared key: ingress holds only its private key and
the spool only ingress's public key, so neither a spool's files nor its memory can sign for
ingress, and the public key can be handed around freely. The spool signs its own DSNs (which
it publishes as `received` too) with a key of its own; it trusts that key without being told.

What is signed: the subject, a newline, and the event's bytes exactly as published, so a
signature is good for that event on that subject and nothing else. It travels in the NATS
header `Empath-Signature: ed25519 <key id> <signature, base64>`; the key id (the first 8
bytes of the SHA-256 of the raw public key, in hex) names the key, so several may be trusted
at once while one replaces another (README "Security", rotating keys).

Files: a private key is PEM PKCS#8 (`openssl genpkey -algorithm ed25519` makes one); a file
of trusted keys holds one or more PEM public keys (`openssl pkey -pubout`), one after another.
`python -m empath.core.signing DIR` makes the keys `empath up` makes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from empath.core import errors
from empath.core.settings import ENV_PREFIX, Settings

HEADER = "Empath-Signature"
ALGORITHM = "ed25519"
# The files `empath up` (and `python -m empath.core.signing`) make in its credentials directory.
INGRESS_KEY = "event-ingress.key"
SPOOL_KEY = "event-spool.key"
TRUSTED_KEYS = "event-trusted.pub"

KEY_SETTING = f"{ENV_PREFIX}EVENT_SIGNING_KEY_FILE"
TRUSTED_SETTING = f"{ENV_PREFIX}EVENT_TRUSTED_KEYS_FILE"
SWITCH_SETTING = f"{ENV_PREFIX}EVENT_SIGNING"

_PEM_PUBLIC = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
# A header longer than this is no signature of ours (an Ed25519 one is 88 characters).
MAX_HEADER = 200


class Unauthentic(errors.PermanentError):
    """An event whose signature is missing, malformed, by an unknown key, or wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # bounded: a metric attribute


def key_id(public: ed25519.Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _signed_bytes(subject: str, data: bytes) -> bytes:
    return subject.encode() + b"\n" + data


@dataclass(frozen=True, slots=True)
class Signer:
    """A service's private key, signing what it publishes."""

    private: ed25519.Ed25519PrivateKey
    # The id of its public key, made once: `sign` runs for every message ingress accepts.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", key_id(self.public))

    @property
    def public(self) -> ed25519.Ed25519PublicKey:
        return self.private.public_key()

    def sign(self, subject: str, data: bytes) -> str:
        """The value of the signature header for `data` published on `subject`."""
        signature = self.private.sign(_signed_bytes(subject, data))
        return f"{ALGORITHM} {self.key} {base64.b64encode(signature).decode()}"


@dataclass(frozen=True, slots=True)
class Verifier:
    """The public keys whose signatures a service accepts, by key id."""

    keys: dict[str, ed25519.Ed25519PublicKey]

    def verify(self, subject: str, data: bytes, headers: dict[str, str] | None) -> str:
        """The id of the key that signed `data` on `subject`, or `Unauthentic`."""
        value = (headers or {}).get(HEADER)
        if not value:
            raise Unauthentic("missing", f"no {HEADER} header")
        parts = value[:MAX_HEADER].split(" ")
        if len(value) > MAX_HEADER or len(parts) != 3 or parts[0] != ALGORITHM:
            raise Unauthentic("malformed", f"malformed {HEADER} header")
        _, kid, encoded = parts
        public = self.keys.get(kid)
        if public is None:
            raise Unauthentic("unknown-key", f"signed by key {kid!r}, which is not trusted")
        try:
            public.verify(base64.b64decode(encoded, validate=True), _signed_bytes(subject, data))
        except (InvalidSignature, binascii.Error, ValueError):
            raise Unauthentic("bad", f"the signature of key {kid} does not match") from None
        return kid


def load_private(path: Path, *, setting: str = KEY_SETTING) -> Signer:
    """The Ed25519 private key in `path`, or `ConfigurationError` naming `setting`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise errors.ConfigurationError(f"{setting}: cannot load {path}: {error}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise errors.ConfigurationError(f"{setting}: {path} holds no Ed25519 private key")
    return Signer(key)


def load_public(path: Path, *, setting: str = TRUSTED_SETTING) -> list[ed25519.Ed25519PublicKey]:
    """Every Ed25519 public key in `path` (PEM blocks one after another), at least one."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise errors.ConfigurationError(f"{setting}: cannot read {path}: {error}") from None
    found = []
    for block in _PEM_PUBLIC.findall(text):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except (ValueError, UnsupportedAlgorithm) as error:
            raise errors.ConfigurationError(f"{setting}: {path}: {error}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise errors.ConfigurationError(f"{setting}: {path} holds a key that is not Ed25519")
        found.append(key)
    if not found:
        raise errors.ConfigurationError(f"{setting}: {path} holds no PEM public key")
    return found


def signer_of(settings: Settings) -> Signer | None:
    """This service's signer, when it has a key (any service given one signs its events)."""
    path = settings.event_signing_key_file
    return None if path is None else load_private(path)


def required_signer(settings: Settings, service: str) -> Signer | None:
    """The signer of a service whose `received` events must be signed (ingress, spool): a
    missing key stops it at start, unless signing is switched off."""
    signer = signer_of(settings)
    if signer is None and settings.event_signing == "on":
        raise errors.ConfigurationError(
            f"{KEY_SETTING}: {service} signs every received event and needs its key "
            f"(`python -m empath.core.signing DIR` makes the keys), or {SWITCH_SETTING}=off "
            "to run without signed events"
        )
    return signer


def verifier_of(settings: Settings, own: Signer | None) -> Verifier | None:
    """What the spool trusts: the keys in the trusted file and its own; None when signing is
    off (every `received` is taken). On, without a trusted file, the spool does not start."""
    if settings.event_signing == "off":
        return None
    if settings.event_trusted_keys_file is None:
        raise errors.ConfigurationError(
            f"{TRUSTED_SETTING}: the spool queues only received events signed by ingress and "
            f"needs ingress's public key(s), or {SWITCH_SETTING}=off to take unsigned ones"
        )
    keys = load_public(settings.event_trusted_keys_file)
    if own is not None:
        keys.append(own.public)
    return Verifier({key_id(key): key for key in keys})


def public_pem(public: ed25519.Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def private_pem(private: ed25519.Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_keys() -> dict[str, bytes]:
    """Fresh keys, by file name: ingress's and the spool's private keys, and the trusted keys
    the spool reads (ingress's public key). The operator puts them in a Secret."""
    ingress, spool = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    return {
        INGRESS_KEY: private_pem(ingress),
        SPOOL_KEY: private_pem(spool),
        TRUSTED_KEYS: public_pem(ingress.public_key()),
    }


def ensure_private(path: Path) -> Signer:
    """The private key in `path`, made the first time (mode 0600) and kept afterwards."""
    if not path.is_file() or not path.read_bytes().strip():
        _write_private(path, private_pem(ed25519.Ed25519PrivateKey.generate()))
    return load_private(path)


def ensure_keys(directory: Path) -> dict[str, Path]:
    """Ingress's and the spool's private keys in `directory` (made once, kept afterwards),
    and the trusted keys the spool reads (ingress's public key, written again each time from
    the private one): by file name."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ingress = ensure_private(directory / INGRESS_KEY)
    ensure_private(directory / SPOOL_KEY)
    # Not a secret, but kept like the rest of the directory: nobody else's to replace.
    _write_private(directory / TRUSTED_KEYS, public_pem(ingress.public))
    return {name: directory / name for name in (INGRESS_KEY, SPOOL_KEY, TRUSTED_KEYS)}


def role_keys(directory: Path, role: str) -> dict[str, Path]:
    """The signing settings of one role, from the files `ensure_keys` made."""
    if role == "ingress":
        return {"event_signing_key_file": directory / INGRESS_KEY}
    if role == "spool":
        return {
            "event_signing_key_file": directory / SPOOL_KEY,
            "event_trusted_keys_file": directory / TRUSTED_KEYS,
        }
    return {}


def main(argv: list[str] | None = None) -> int:
    """`python -m empath.core.signing DIR`: the event keys of `empath up`, made in DIR."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m empath.core.signing DIRECTORY", file=sys.stderr)
        return 2
    directory = Path(args[0])
    ensure_keys(directory)
    print(f"ingress: {KEY_SETTING}={directory / INGRESS_KEY}")
    spool, trusted = directory / SPOOL_KEY, directory / TRUSTED_KEYS
    print(f"spool:   {KEY_SETTING}={spool} {TRUSTED_SETTING}={trusted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
