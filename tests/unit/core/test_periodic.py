"""Background loops run their work every so often, live through its errors, and stop at once;
work retried until it succeeds gives back its result, and a bug in it is not retried."""

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

    await periodic.every(0.001, work, stop=stop, log=log, what="counting")
    assert runs == 5


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
    await asyncio.wait_for(loop, timeout=1.0)


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


async def test_work_tried_until_done_gives_back_its_result_without_stop() -> None:
    stop = asyncio.Event()
    tries = 0

    async def reach() -> str:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise errors.StoreUnavailable("no bucket yet")
        return "bucket"

    reached = await periodic.until_done(reach, stop=stop, log=log, what="waiting", delay=0.001)
    assert (reached, tries) == ("bucket", 3)
    assert not stop.is_set()


async def test_a_bug_in_work_tried_until_done_is_raised_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    tries = 0

    async def reach() -> str:
        nonlocal tries
        tries += 1
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        await periodic.until_done(reach, stop=stop, log=log, what="waiting", delay=0.001)
    assert tries == 1
    assert caplog.records == []


async def test_only_the_failures_named_are_retried() -> None:
    stop = asyncio.Event()
    failures: list[Exception] = [
        errors.StoreUnavailable("down"),
        errors.BusUnavailable("not the store"),
    ]

    async def reach() -> str:
        raise failures.pop(0)

    with pytest.raises(errors.BusUnavailable):
        await periodic.until_done(
            reach,
            stop=stop,
            log=log,
            what="waiting",
            delay=0.001,
            retry=(errors.StoreUnavailable,),
        )
    assert failures == []


async def test_stop_cancels_work_in_progress_and_gives_back_none() -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    cancelled = False

    async def connect() -> str:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.Event().wait()  # the other end never answers
        except asyncio.CancelledError:
            cancelled = True
            raise
        return "connected"

    trying = asyncio.create_task(
        periodic.until_done(connect, stop=stop, log=log, what="connecting", delay=3600)
    )
    await started.wait()
    stop.set()
    assert await asyncio.wait_for(trying, timeout=1.0) is None
    assert cancelled


async def test_nothing_is_tried_once_stopped() -> None:
    stop = asyncio.Event()
    stop.set()

    async def connect() -> str:
        raise AssertionError("tried after stop")

    assert await periodic.until_done(connect, stop=stop, log=log, what="x", delay=1) is None


async def test_pause_ends_when_stop_is_set() -> None:
    stop = asyncio.Event()
    pausing = asyncio.create_task(periodic.pause(stop, 3600))
    await asyncio.sleep(0)
    assert not pausing.done()
    stop.set()
    await asyncio.wait_for(pausing, timeout=1.0)


async def test_with_warn_once_a_run_of_failures_warns_once_and_the_recovery_is_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    outcomes = [False, False, False, True, True, False, True]

    async def beat() -> None:
        if len(outcomes) == 1:
            stop.set()
        if not outcomes.pop(0):
            raise errors.BusUnavailable("not connected to NATS")

    with caplog.at_level(logging.DEBUG, logger=log.name):
        await periodic.every(0.001, beat, stop=stop, log=log, what="heartbeat", warn_once=True)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "heartbeat: not connected to NATS"),
        ("DEBUG", "heartbeat: not connected to NATS"),
        ("DEBUG", "heartbeat: not connected to NATS"),
        ("INFO", "heartbeat: working again"),
        ("WARNING", "heartbeat: not connected to NATS"),
        ("INFO", "heartbeat: working again"),
    ]


async def test_waits_after_failures_double_up_to_the_limit_and_reset_after_a_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = asyncio.Event()
    waits: list[float] = []

    async def pause(
        event: asyncio.Event, seconds: float, *, wake: asyncio.Event | None = None
    ) -> None:
        waits.append(seconds)

    monkeypatch.setattr(periodic, "pause", pause)
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


async def test_a_wake_runs_the_work_again_without_waiting_out_the_interval() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    def work() -> None:
        runs.append(1)
        if len(runs) == 3:
            stop.set()
        else:
            wake.set()  # as a new message due now would, during the run

    # An interval of an hour: only the wakes can bring the second and third runs.
    await asyncio.wait_for(
        periodic.every(3600, work, stop=stop, log=log, what="waking", wake=wake), 5
    )
    assert len(runs) == 3
