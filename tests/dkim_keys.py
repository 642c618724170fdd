"""DKIM keys for the tests: RSA private keys written as a key directory holds them, a weak one
no signer may use, and the public key as DNS publishes it (`<selector>._domainkey.<domain>`)."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.dns_server import DnsServer

_PEM = (
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def write_key(directory: Path, name: str) -> rsa.RSAPrivateKey:
    """A new 2048-bit key in `directory/name` (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(key.private_bytes(*_PEM))
    return key


def write_weak_key(directory: Path, name: str) -> None:
    """A 476-bit RSA key (two known primes; `cryptography` will not generate one so small)."""
    p, q, e = 2**255 - 19, 2**221 - 3, 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(key.private_bytes(*_PEM))


def publish(dns: DnsServer, selector: str, domain: str, key: rsa.RSAPrivateKey) -> None:
    """`<selector>._domainkey.<domain>` TXT `v=DKIM1; k=rsa; p=...`, in 255-byte strings."""
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    chunks = " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
    dns.add(f"{selector}._domainkey.{domain}", "TXT", chunks)
