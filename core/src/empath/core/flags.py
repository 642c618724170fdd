"""Queue-wide flags in the KV bucket `names.FLAGS_BUCKET` (read by spool and delivery)."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from empath.core import names


async def is_frozen(flags: KeyValue) -> bool:
    """Whether an operator froze the queue: no new delivery attempts start."""
    try:
        entry = await flags.get(names.FROZEN_FLAG)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return False
    return entry.value == b"1"


async def set_frozen(flags: KeyValue, frozen: bool) -> None:
    await flags.put(names.FROZEN_FLAG, b"1" if frozen else b"0")
