"""Bodies of finished messages go in batches, and what the store refused is tried again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from empath.core import errors, store
from empath.spool import removals


class Bucket:
    def __init__(self, *keys: str) -> None:
        self.bodies = set(keys)
        self.requests: list[list[str]] = []
        self.refuse: set[str] = set()
        self.down = False

    async def delete_many(self, keys: list[str]) -> list[str]:
        if self.down:
            raise errors.StoreUnavailable("delete: connection refused")
        self.requests.append(keys)
        self.bodies -= set(keys) - self.refuse
        return sorted(self.refuse & set(keys))


async def test_collected_keys_go_in_one_request_each_once() -> None:
    bucket = Bucket("a", "b", "c")
    bodies = removals.Removals(bucket)  # type: ignore[arg-type]
    for key in ("a", "b", "a", "c"):
        bodies.add(key)
    await bodies.flush()
    assert bucket.requests == [["a", "b", "c"]]
    assert bucket.bodies == set()
    assert not bodies.pending


async def test_a_full_batch_asks_for_a_flush_at_once() -> None:
    bodies = removals.Removals(Bucket())  # type: ignore[arg-type]
    for n in range(removals.BATCH - 1):
        bodies.add(f"k{n}")
    assert not bodies.full.is_set()
    bodies.add("last")
    assert bodies.full.is_set()


async def test_keys_the_store_refused_or_could_not_take_stay_for_the_next_flush() -> None:
    bucket = Bucket("a", "b")
    bucket.refuse = {"b"}
    bodies = removals.Removals(bucket)  # type: ignore[arg-type]
    bodies.add("a")
    bodies.add("b")
    await bodies.flush()
    assert list(bodies.pending) == ["b"]
    bucket.down = True
    with pytest.raises(errors.StoreUnavailable):
        await bodies.flush()
    assert list(bodies.pending) == ["b"]
    bucket.down, bucket.refuse = False, set()
    await bodies.flush()
    assert bucket.bodies == set()
    assert not bodies.pending


async def test_more_than_one_request_worth_goes_in_several() -> None:
    bucket = Bucket()
    bodies = removals.Removals(bucket)  # type: ignore[arg-type]
    for n in range(removals.REQUEST_LIMIT + 5):
        bodies.add(f"k{n}")
    await bodies.flush()
    assert [len(r) for r in bucket.requests] == [removals.REQUEST_LIMIT, 5]


async def test_void_markers_older_than_two_days_are_swept_and_no_other_key() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    old = store.void_key(store.body_key("OLD", now - timedelta(days=3)))
    recent = store.void_key(store.body_key("NEW", now - timedelta(days=1)))

    class Listing(Bucket):
        async def keys(self, prefix: str) -> list[str]:
            assert prefix == store.VOID_PREFIX
            return [old, recent, f"{store.VOID_PREFIX}stray"]

    bucket = Listing(old, recent)
    bodies = removals.Removals(bucket)  # type: ignore[arg-type]
    assert await bodies.sweep(now) == 1
    await bodies.flush()
    assert bucket.bodies == {recent}
