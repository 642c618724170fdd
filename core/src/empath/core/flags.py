"""Queue-wide flags in the KV bucket `names.FLAGS_BUCKET` (read by spool and delivery)."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from empath.core import errors, names


async def is_frozen(flags: KeyValue) -> bool:
    """Whether an operator froze the queue: no new delivery attempts start."""
    try:
        entry = await flags.get(names.FROZEN_FLAG)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return False
    except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
        # NATS restarting: a temporary failure the caller knows (a job put back, a tick
        # skipped), not an unforeseen error logged with its traceback.
        raise errors.BusUnavailable(f"cannot read the queue flags: {error!r}") from error
    return entry.value == b"1"


async def set_frozen(flags: KeyValue, frozen: bool) -> None:
    await flags.put(names.FROZEN_FLAG, b"1" if frozen else b"0")


class Cached:
    """`is_frozen`, read from the bucket at most once every `seconds`: for a path that asks
    for every message (the spool's intake) where a moment's delay in seeing a freeze is
    harmless. A failed read is not kept: the next call reads again."""

    def __init__(self, flags: KeyValue, *, seconds: float = 0.5) -> None:
        self.flags = flags
        self.seconds = seconds
        self._value = False
        self._until = float("-inf")
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """Read the flag again at the next call (this process has just changed it)."""
        self._until = float("-inf")

    async def __call__(self) -> bool:
        if time.monotonic() < self._until:
            return self._value
        async with self._lock:  # one read for everyone asking at once
            if time.monotonic() >= self._until:
                self._value = await is_frozen(self.flags)
                self._until = time.monotonic() + self.seconds
        return self._value
