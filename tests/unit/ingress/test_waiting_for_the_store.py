"""At start ingress waits for the object store for as long as it is away, but a bug in the
waiting ends the service instead of being retried for ever."""

from __future__ import annotations

import asyncio

import pytest

from empath.core import errors
from empath.ingress import service


class Store:
    """An object store that answers `ensure_bucket` with the failures it is given, in turn."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.tried = asyncio.Event()

    async def ensure_bucket(self) -> None:
        self.calls += 1
        self.tried.set()
        if self.failures:
            raise self.failures.pop(0)


async def test_ingress_waits_while_the_store_is_unavailable_and_goes_on_once_it_is_there() -> None:
    store = Store(errors.StoreUnavailable("bucket empath: connection refused"))
    reached = await service.wait_for_store(store, asyncio.Event())  # type: ignore[arg-type]
    assert (reached, store.calls) == (True, 2)


async def test_a_bug_while_waiting_for_the_store_is_raised_not_retried() -> None:
    store = Store(AttributeError("'NoneType' object has no attribute 'bucket_exists'"))
    waiting = service.wait_for_store(store, asyncio.Event())  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        await asyncio.wait_for(waiting, timeout=5.0)
    assert store.calls == 1


async def test_waiting_for_the_store_ends_with_false_when_the_service_stops() -> None:
    stop = asyncio.Event()
    store = Store(*[errors.StoreUnavailable("down")] * 100)
    waiting = asyncio.create_task(service.wait_for_store(store, stop))  # type: ignore[arg-type]
    await store.tried.wait()
    stop.set()
    assert await asyncio.wait_for(waiting, timeout=1.0) is False
