"""Background loops run their work every so often, live through its errors, and stop at once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from empath.core import errors, periodic

log = logging.getLogger("empath.tests.periodic")


async def test_work_runs_again_every_interval_until_stop() -> None:
    stop = asyncio.Event()
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 5:
            stop.set()

    finished = await periodic.every(0.001, work, stop=stop, log=log, what="counting")
    assert (runs, finished) == (5, False)


async def test_a_failing_run_is_logged_and_the_next_run_still_happens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    failures: list[Exception] = [
        errors.BusUnavailable("not connected to NATS"),
        OSError("connection refused"),
        ValueError("a bug"),
    ]
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if failures:
            raise failures.pop(0)
        stop.set()

    with caplog.at_level(logging.WARNING, logger=log.name):
        await periodic.every(0.001, work, stop=stop, log=log, what="scheduler tick failed")
    assert runs == 4
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "scheduler tick failed: not connected to NATS"),
        ("WARNING", "scheduler tick failed: connection refused"),
        ("ERROR", "scheduler tick failed: unexpected error"),
    ]
    assert caplog.records[-1].exc_info is not None  # a bug comes with its traceback


async def test_stop_ends_a_long_wait_at_once() -> None:
    stop = asyncio.Event()
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    loop = asyncio.create_task(periodic.every(3600, work, stop=stop, log=log, what="hourly"))
    await ran.wait()
    stop.set()
    assert await asyncio.wait_for(loop, timeout=1.0) is False


async def test_with_wait_first_nothing_runs_when_stopped_during_the_first_wait() -> None:
    stop = asyncio.Event()
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1

    loop = asyncio.create_task(
        periodic.every(3600, work, stop=stop, log=log, what="hourly", wait_first=True)
    )
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(loop, timeout=1.0)
    assert runs == 0


async def test_work_that_is_done_ends_the_loop_without_stop() -> None:
    stop = asyncio.Event()
    tries = 0

    async def reach() -> object:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise errors.StoreUnavailable("no bucket yet")
        return periodic.DONE

    assert await periodic.every(0.001, reach, stop=stop, log=log, what="waiting") is True
    assert tries == 3
    assert not stop.is_set()


async def test_waits_after_failures_double_up_to_the_limit_and_reset_after_a_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = asyncio.Event()
    waits: list[float] = []

    async def pause(event: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(periodic, "_pause", pause)
    outcomes = [False] * 6 + [True, False, False]

    async def work() -> None:
        if not outcomes:
            stop.set()
            return
        if not outcomes.pop(0):
            raise errors.StoreUnavailable("down")

    await periodic.every(0.5, work, stop=stop, log=log, what="waiting", backoff_to=10.0)
    # Six failures, a success, two failures, and the last run (which sets stop).
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 0.5, 0.5, 1.0, 0.5]
