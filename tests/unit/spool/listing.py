"""Queue records as the spool's live view holds them, and the list call over such a view."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any

from empath.core import events, ids, queue
from empath.spool import api, view

START = datetime(2026, 1, 1, tzinfo=UTC)


def entry(
    minute: int,
    *,
    state: queue.State = queue.State.QUEUED,
    sender: str = "a@one.test",
    to: str = "u@example.com",
) -> queue.Entry:
    received = START + timedelta(minutes=minute)
    message_id = ids.new_id(now_ns=int(received.timestamp() * 1e9))
    return queue.Entry(
        id=message_id,
        state=state,
        sender=sender,
        recipients=(queue.RecipientState(address=to),),
        size=10,
        body_key=f"2026/01/01/{message_id}",
        received_at=received,
        client=events.Client(ip="192.0.2.1"),
    )


def list_call(entries: list[queue.Entry], max_payload: int = 1024 * 1024) -> api.QueryAPI:
    """The list call over a view holding `entries` (it needs nothing else but the payload
    limit of the NATS connection)."""
    live = view.QueueView()
    for e in entries:
        live.apply(e.id, e)
    nothing: Any = None
    nc: Any = types.SimpleNamespace(max_payload=max_payload)
    return api.QueryAPI(nc, nothing, nothing, live, nothing)
