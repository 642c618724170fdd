"""Operator controls: hold and release one message, freeze and unfreeze the whole queue.

A held message keeps its place (state `frozen`) and is never dispatched until released; an
attempt already in flight still reports its outcome. A frozen queue dispatches nothing, and
delivery workers put back jobs they have not started; nothing is lost either way.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js.kv import KeyValue

from empath.core import errors, flags, queue
from empath.spool import records


async def hold(store: records.Records, message_id: str) -> queue.Entry:
    def change(entry: queue.Entry) -> queue.Entry | None:
        if entry.finished:
            raise errors.PermanentError(f"{message_id} is {entry.state.value}: nothing to hold")
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
