"""Operator controls: hold and release one message, freeze and unfreeze the whole queue.

A held message keeps its place (state `frozen`) and is never dispatched until released; an
attempt already in flight still reports its outcome. A frozen queue dispatches nothing, and
delivery workers put back jobs they have not started; nothing is lost either way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js.kv import KeyValue

from empath.core import addresses, errors, flags, queue
from empath.core import store as store_module
from empath.spool import records, view


async def hold(store: records.Records, message_id: str) -> queue.Entry:
    def change(entry: queue.Entry) -> queue.Entry | None:
        if entry.finished:
            raise errors.Conflict(f"{message_id} is {entry.state.value}: nothing to hold")
        if entry.held:
            return None
        state = entry.state if entry.state == queue.State.DELIVERING else queue.State.FROZEN
        return entry.model_copy(
            update={"held": True, "state": state, "updated_at": datetime.now(UTC)}
        )

    await store.update(message_id, change)
    return await store.get(message_id)


async def release(store: records.Records, message_id: str) -> queue.Entry:
    def change(entry: queue.Entry) -> queue.Entry | None:
        if not entry.held:
            return None
        now = datetime.now(UTC)
        if entry.state == queue.State.DELIVERING:
            return entry.model_copy(update={"held": False, "updated_at": now})
        state = queue.State.QUEUED if entry.attempts == 0 else queue.State.DEFERRED
        return entry.model_copy(
            update={"held": False, "state": state, "next_attempt": now, "updated_at": now}
        )

    await store.update(message_id, change)
    return await store.get(message_id)


async def freeze(flag_store: KeyValue) -> None:
    await flags.set_frozen(flag_store, True)


async def unfreeze(flag_store: KeyValue) -> None:
    await flags.set_frozen(flag_store, False)


def _retry_now(entry: queue.Entry) -> queue.Entry | None:
    if entry.held or entry.state not in {queue.State.QUEUED, queue.State.DEFERRED}:
        return None
    now = datetime.now(UTC)
    return entry.model_copy(update={"next_attempt": now, "updated_at": now})


async def retry(store: records.Records, message_id: str) -> queue.Entry:
    """Try a waiting message now instead of at its next retry time."""
    entry = await store.get(message_id)
    if entry.held or entry.state not in {queue.State.QUEUED, queue.State.DEFERRED}:
        raise errors.Conflict(f"{message_id} is {entry.state.value}: nothing to retry")
    await store.update(message_id, _retry_now)
    return await store.get(message_id)


async def retry_domain(store: records.Records, entries: list[view.Summary], domain: str) -> int:
    """Try now every deferred message with a recipient still open at `domain`."""
    domain = addresses.normal_domain(domain)
    count = 0
    for entry in entries:
        if entry.state == queue.State.DEFERRED and domain in entry.open_domains:
            count += (await store.update(entry.id, _retry_now)) is not None
    return count


async def delete(
    store: records.Records,
    objects: store_module.ObjectStore,
    message_id: str,
    recipients: list[str] | None = None,
) -> queue.Entry | None:
    """Delete a message (no bounce), or only some of its recipients. Returns what is left."""
    if recipients:
        wanted = {r.lower() for r in recipients}

        def drop(entry: queue.Entry) -> queue.Entry | None:
            known = {r.address.lower() for r in entry.recipients}
            missing = wanted - known
            if missing:
                raise errors.Conflict(f"not recipients of {message_id}: {sorted(missing)}")
            left = tuple(r for r in entry.recipients if r.address.lower() not in wanted)
            if not left:
                return None
            return entry.model_copy(update={"recipients": left, "updated_at": datetime.now(UTC)})

        if await store.update(message_id, drop) is not None:
            return await store.get(message_id)
    entry = await store.get(message_id)
    await store.delete(message_id)
    if entry.body_seq is None:  # else only its event carries it: nothing in the bucket
        await objects.delete(entry.body_key)
    return None
