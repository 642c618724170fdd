"""Work done every so often until the service stops, and work retried until it succeeds.

The services' background loops (the scheduler's tick, the queue view's watch, the heartbeat,
certificate reloads, the connection reaper) all do some work, wait, and go again until `stop`
is set: that is `every`. Waiting for something at start (the object store, a subscription, a
new NATS connection) tries until it works and then goes on with what it got: that is
`until_done`. Both get the same guarantees here: `stop` cuts any wait short (`pause`), so
shutting down never waits out an interval, and a failure the loop expects now and then (the
bus or the store away) is logged without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from empath.core import errors

T = TypeVar("T")

# Failures a loop expects now and then (the bus or the store away): logged without a traceback.
EXPECTED: tuple[type[Exception], ...] = (
    errors.EmpathError,
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
)


async def every(
    seconds: float,
    work: Callable[[], object],
    *,
    stop: asyncio.Event,
    log: logging.Logger,
    what: str,
    wait_first: bool = False,
    backoff_to: float | None = None,
    warn_once: bool = False,
    wake: asyncio.Event | None = None,
) -> None:
    """Run `work()` every `seconds` until `stop` is set, and sooner whenever `wake` is set.

    `work` may be a coroutine function or a plain one (run on the loop, so it must be quick).

    A failure of `work` is logged as `<what>: <error>` and the loop goes on (a scheduler that
    died on one bad tick would leave mail waiting until a restart); with `backoff_to`, the
    wait after each failure doubles, up to that many seconds. With `warn_once`, only the first
    of a run of expected failures is a warning (the others are debug) and the recovery is
    logged: for loops on every service (the heartbeat) that would otherwise warn each
    interval while NATS is down. `stop` is checked between runs (work in progress is let
    finish) and ends any wait at once; so does `wake`, which is cleared before each run (so a
    wake during a run leads to one more run, never to a lost one).
    """
    if wait_first:
        await pause(stop, seconds)
    delay = seconds  # the wait after a failure
    failing = False
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        try:
            result = work()
            if inspect.isawaitable(result):
                await result
        except EXPECTED as error:
            level = logging.DEBUG if warn_once and failing else logging.WARNING
            log.log(level, "%s: %s", what, _describe(error))
        except Exception:
            log.exception("%s: unexpected error", what)
        else:
            if failing and warn_once:
                log.info("%s: working again", what)
            failing = False
            delay = seconds
            await pause(stop, seconds, wake=wake)
            continue
        failing = True
        await pause(stop, delay)
        if backoff_to is not None:
            delay = min(delay * 2, backoff_to)


async def until_done(
    work: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    log: logging.Logger,
    what: str,
    delay: float,
    backoff_to: float | None = None,
    retry: tuple[type[Exception], ...] = EXPECTED,
) -> T | None:
    """Try `work()` until it returns, and return what it returned; None when `stop` comes first.

    Only the failures in `retry` are tried again (logged as `<what>: <error>`, then a wait of
    `delay` seconds, doubling up to `backoff_to` when given); anything else is a bug and is
    raised, not retried for ever. `stop` ends a wait at once and cancels work in progress
    (connecting may take as long as the other end is away). `work` must not return None.
    """
    wait = delay
    while not stop.is_set():
        try:
            result = await _unless_stopped(work(), stop)
        except retry as error:
            log.warning("%s: %s", what, _describe(error))
        else:
            return result
        await pause(stop, wait)
        if backoff_to is not None:
            wait = min(wait * 2, backoff_to)
    return None


async def pause(stop: asyncio.Event, seconds: float, *, wake: asyncio.Event | None = None) -> None:
    """Sleep `seconds`, or less when `stop` (or `wake`) is set meanwhile."""
    if wake is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return
    if wake.is_set():
        return
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """What `work` returns, or None once `stop` is set (`work` is cancelled then)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    return task.result()


def _describe(error: BaseException) -> str:
    return str(error) or error.__class__.__name__
