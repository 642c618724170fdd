"""Waiting on a condition instead of sleeping: the one way the tests wait for the system.

A test that sleeps a fixed time is slow when the machine is idle and flaky when it is busy;
`eventually` asks again until the answer is right, and when time runs out it says what it was
waiting for and the last thing it saw, so a failure reads as a sentence, not a bare timeout.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _describe(condition: Any) -> str:
    name = getattr(condition, "__qualname__", None) or repr(condition)
    return "<lambda>" if name.endswith("<lambda>") else name


async def eventually(
    condition: Callable[[], Awaitable[T] | T],
    *,
    until: Callable[[T], bool] = bool,
    what: str | None = None,
    timeout: float = 10.0,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `condition` (a plain function, or one returning an awaitable) until `until` holds
    for what it returns, and return that.

    `ignoring` names exceptions that mean "not yet" (a record not written yet); any other
    exception fails the test at once, as it should. On timeout the assertion names `what`
    was awaited and the last value (or exception) seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = "nothing yet"
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as error:
            last = error
        else:
            if until(value):
                return value
            last = value
        if loop.time() >= deadline:
            raise AssertionError(
                f"waited {timeout:g}s for {what or _describe(condition)}; last seen: {last!r}"
            )
        await asyncio.sleep(interval)


async def passes(check: Callable[[], Awaitable[T]], *, timeout: float = 20.0) -> T:
    """What `check` returns once it stops failing its assertions (on timeout, an assertion
    naming its last failure): `eventually` for checks written as assertions."""
    return await eventually(
        check,
        until=lambda _: True,
        ignoring=(AssertionError,),
        what=check.__name__,
        timeout=timeout,
    )
