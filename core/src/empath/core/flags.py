"""Queue-wide flags in the KV bucket `names.FLAGS_BUCKET` (read by spool and delivery)."""

from __future__ import annotations

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
