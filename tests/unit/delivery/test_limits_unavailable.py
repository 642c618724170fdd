"""When the shared limits cannot be read (NATS away), a domain's recipients are deferred with a
reply that says so, and no session is opened: a limit that cannot be checked is not ignored."""

from __future__ import annotations

from typing import Any

import nats.errors

from empath.core import events
from empath.delivery import limits
from tests.unit.delivery.remote import a_worker, job


class Away:
    """A KV bucket whose NATS connection is gone."""

    async def get(self, key: str) -> Any:
        raise nats.errors.ConnectionClosedError

    async def create(self, key: str, value: bytes) -> int:
        raise nats.errors.ConnectionClosedError

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        raise nats.errors.ConnectionClosedError


async def test_recipients_wait_with_a_4xx_reply_when_the_limits_cannot_be_read() -> None:
    deliverer = a_worker()
    shared = limits.Shared(Away(), settings=deliverer.settings)  # type: ignore[arg-type]
    deliverer.limits = shared
    opened: list[Any] = []

    async def never(*args: Any) -> Any:
        opened.append(args)
        raise AssertionError("no session may be opened")

    deliverer.connections.acquire = never  # type: ignore[method-assign]
    recipients = [events.Recipient(address="b@example.com")]

    results = await deliverer.deliver_safely(job(*recipients), "example.com", recipients, b"x")

    assert [(r.outcome, r.reply) for r in results] == [
        ("deferred", "451 4.3.0 Delivery to example.com waits: its limits cannot be read now")
    ]
    assert opened == []
    await shared.close()
