"""Work done every so often until the service stops, written once.

The services' background loops (the scheduler's tick, the queue view's watch, the heartbeat,
certificate reloads, the connection reaper, waiting for the object store) all do some work,
wait, and go again until `stop` is set. Here they get the same guarantees: an error is logged
and the loop goes on (a scheduler that died on one bad tick would leave mail waiting until a
restart), and `stop` cuts the wait short, so shutting down never waits out an interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors

from empath.core import errors

# What `work` returns to end the loop: the thing it waited for has happened.
DONE = object()

# Failures a loop expects now and then (the bus or the store away): logged without a traceback.
EXPECTED = (errors.EmpathError, nats.errors.Error, nats.js.errors.Error, OSError)


async def every(
    seconds: float,
    work: Callable[[], object],
    *,
    stop: asyncio.Event,
    log: logging.Logger,
    what: str,
    wait_first: bool = False,
    backoff_to: float | None = None,
) -> bool:
    """Run `work()` every `seconds` until `stop` is set; True when `work` returned `DONE`.

    `work` may be a coroutine function or a plain one (run on the loop, so it must be quick).

    A failure of `work` is logged as `<what>: <error>` and the loop goes on; with
    `backoff_to`, the wait after each failure doubles, up to that many seconds. `stop` is
    checked between runs (work in progress is let finish) and ends any wait at once.
    """
    if wait_first:
        await _pause(stop, seconds)
    delay = seconds  # the wait after a failure
    while not stop.is_set():
        try:
            result = work()
            if inspect.isawaitable(result):
                result = await result
            if result is DONE:
                return True
        except EXPECTED as error:
            log.warning("%s: %s", what, str(error) or error.__class__.__name__)
        except Exception:
            log.exception("%s: unexpected error", what)
        else:
            delay = seconds
            await _pause(stop, seconds)
            continue
        await _pause(stop, delay)
        if backoff_to is not None:
            delay = min(delay * 2, backoff_to)
    return False


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
