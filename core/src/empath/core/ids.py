"""Queue ids: unique, sortable by time, safe in SMTP replies, NATS KV keys and object keys."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: no I, L, O, U


def new_id(now_ns: int | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def is_valid(message_id: str) -> bool:
    """Whether a string has the shape of a queue id (used to refuse bad API input)."""
    return len(message_id) == 26 and all(c in _ALPHABET for c in message_id)
