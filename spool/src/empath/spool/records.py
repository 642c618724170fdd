"""Queue records in NATS KV: create once, read, list, count.

Creating a record is `kv.create`, which fails when the key exists: a redelivered `received`
event, or the same event handled by two spool replicas at once, records the message once.
Later changes (a later issue's scheduler) go through `kv.update` with the revision read.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import ValidationError

from empath.core import bus, errors, ids, metrics, names, queue, telemetry

log = logging.getLogger("empath.spool.records")


# A record as read, with the KV revision it was read at.
Known = tuple[queue.Entry, int]


class Written(NamedTuple):
    """A compare-and-set that went through: the record before, after, and its new revision."""

    before: queue.Entry
    after: queue.Entry
    revision: int


class Watching(Protocol):
    """What follows the bucket (the spool's live view): told of each write before it is made,
    so it need not parse the record back when the write comes round."""

    def expect(self, message_id: str, entry: queue.Entry, data: bytes) -> None: ...
    def forget(self, message_id: str, data: bytes) -> None: ...


class Records:
    def __init__(self, kv: KeyValue, *, watching: Watching | None = None) -> None:
        self.kv = kv
        self.watching = watching

    async def create(self, entry: queue.Entry) -> bool:
        """Record a new message; False when it is already recorded."""
        data = entry.model_dump_json().encode()
        if self.watching is not None:
            self.watching.expect(entry.id, entry, data)
        try:
            await self.kv.create(names.queue_key(entry.id), data)
        except nats.js.errors.KeyWrongLastSequenceError:
            self._not_written(entry.id, data)
            return False
        except (nats.errors.Error, nats.js.errors.Error) as error:
            self._not_written(entry.id, data)
            raise errors.BusUnavailable(f"cannot record {entry.id}: {error!r}") from error
        return True

    def _not_written(self, message_id: str, data: bytes) -> None:
        if self.watching is not None:
            self.watching.forget(message_id, data)

    @telemetry.traced("kv.update")
    async def update(
        self,
        message_id: str,
        change: Callable[[queue.Entry], queue.Entry | None],
        *,
        known: Known | None = None,
    ) -> Written | None:
        """Compare-and-set: apply `change` to the current record until no one else wrote
        in between. Returns what was written, or None when `change` declined (returned None).

        With `known` (a record and its revision, from the live view or a read just made), the
        first try writes without reading: one round trip instead of two when nobody wrote
        since, and a conflict (then a read) when somebody did."""
        key = names.queue_key(message_id)
        for _ in range(100):
            if known is None:
                known = await self.read(message_id)
            before, revision = known
            known = None
            after = change(before)
            if after is None:
                return None
            data = after.model_dump_json().encode()
            if self.watching is not None:
                self.watching.expect(message_id, after, data)
            try:
                written = await self.kv.update(key, data, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._not_written(message_id, data)
                metrics.kv_conflicts.add(1, {"bucket": names.QUEUE_BUCKET})
                continue  # another replica wrote first: look again
            except (nats.errors.Error, nats.js.errors.Error) as error:
                self._not_written(message_id, data)
                raise errors.BusUnavailable(f"cannot update {message_id}: {error!r}") from error
            return Written(before, after, written)
        raise errors.TemporaryError(f"{message_id}: too much contention")

    async def delete(self, message_id: str) -> None:
        try:
            await self.kv.purge(names.queue_key(message_id))
        except (nats.errors.Error, nats.js.errors.Error) as error:
            raise errors.BusUnavailable(f"cannot delete {message_id}: {error!r}") from error

    async def exists(self, message_id: str) -> bool:
        """Whether the queue has a record of this message (read from the bucket)."""
        try:
            await self.read(message_id)
        except errors.NotFound:
            return False
        return True

    async def get(self, message_id: str) -> queue.Entry:
        return (await self.read(message_id))[0]

    async def read(self, message_id: str) -> Known:
        """The record and its revision (what `update` needs to write without reading)."""
        if not ids.is_valid(message_id):
            raise errors.NotFound(f"not a queue id: {message_id!r}")
        try:
            found = await self.kv.get(names.queue_key(message_id))
        except nats.js.errors.KeyNotFoundError:
            raise errors.NotFound(f"no message {message_id} in the queue") from None
        except (nats.errors.Error, nats.js.errors.Error) as error:
            raise errors.BusUnavailable(f"cannot read {message_id}: {error!r}") from error
        assert found.value is not None
        assert found.revision is not None
        return queue.Entry.model_validate_json(found.value), found.revision

    async def all(self) -> list[queue.Entry]:
        """Every record, oldest first (queue ids sort by time)."""
        try:
            found = await bus.kv_items(self.kv, f"{names.QUEUE_KEY_PREFIX}>")
        except (nats.errors.Error, nats.js.errors.Error) as error:
            raise errors.BusUnavailable(f"cannot read the queue: {error!r}") from error
        entries = []
        for key, value in found:
            try:
                entries.append(queue.Entry.model_validate_json(value))
            except ValidationError as error:
                log.error("unreadable record %s: %s", key, error)
        return entries


class Listed(Protocol):
    """What paging and counting need of a record (a record, or the view's summary of one)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> queue.State: ...


L = TypeVar("L", bound=Listed)


@dataclass(frozen=True, slots=True)
class Page(Generic[L]):
    items: list[L]
    next_after: str | None


def page_of(
    entries: list[L],
    *,
    state: queue.State | None = None,
    limit: int = 100,
    after: str | None = None,
) -> Page[L]:
    """A page of records (given oldest first), optionally in one state; `after` pages on."""
    page: list[L] = []
    more = False
    for entry in entries:
        if (state is not None and entry.state != state) or (
            after is not None and entry.id <= after
        ):
            continue
        if len(page) == limit:
            more = True
            break
        page.append(entry)
    return Page(items=page, next_after=page[-1].id if more and page else None)


def counts_of(entries: Iterable[Listed]) -> dict[str, int]:
    """Messages per state (every state present, zero or not) and in total."""
    counted = collections.Counter(entry.state.value for entry in entries)
    result = {state.value: counted.get(state.value, 0) for state in queue.State}
    result["total"] = sum(counted.values())
    return result
