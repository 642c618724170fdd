"""Identifiers: queue ids, and the name of this process.

Queue ids are unique, sortable by time, and safe in SMTP replies, NATS KV keys and object keys.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U

# This process, as heartbeats and attempt reports name it: `host:pid`.
INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
# The same name as a NATS KV key token may spell it (letters, digits, `-` and `_`).
INSTANCE_KEY = "".join(c if c.isalnum() or c in "-_" else "-" for c in INSTANCE)


# Every pair of base32 characters, by the 10 bits they spell.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]


def _ulid(millis: int, entropy: int) -> str:
    """48 bits of milliseconds then 80 bits of entropy, in 26 base32 characters (two at a
    time: made for every session and every message)."""
    value = (millis << 80) | (entropy & ((1 << 80) - 1))
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in range(120, -10, -10)])


def new_id(now_ns: int | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    return _ulid(millis, secrets.randbits(80))


def derived_id(seed: str, when: datetime) -> str:
    """A queue id made from a seed instead of randomness: the same seed, the same id.

    For messages Empath makes itself in answer to an event (DSNs): a redelivered event makes
    the same id again, so JetStream drops the duplicate publish.
    """
    millis = int(when.timestamp() * 1000)
    return _ulid(millis, int.from_bytes(hashlib.sha256(seed.encode()).digest()[:10], "big"))


def is_valid(message_id: str) -> bool:
    """Whether a string has the shape of a queue id (used to refuse bad API input)."""
    return len(message_id) == 26 and all(c in _ALPHABET for c in message_id)
