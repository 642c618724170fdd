"""A job put back again and again before any outcome (issue 10): it comes back later each time,
and past `worker.MAX_DELIVERIES` it counts as a deferred attempt without being tried, so the
retry schedule and `max_attempts` apply to it as to any other."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from typing import Any

import nats.js.errors
import pytest

from empath.core import bus, events, flags, names, queue
from empath.delivery import worker
from tests.unit.delivery.remote import a_worker

MESSAGE_ID = "01KJP5Z4M0ABCDEFGHJKMNPQRS"
BODY_KEY = f"bodies/2026/03/02/{MESSAGE_ID}"


class Bucket:
    """A KV bucket holding `values` by key; any other key is not there."""

    def __init__(self, **values: bytes) -> None:
        self.values = values

    async def get(self, key: str) -> types.SimpleNamespace:
        if key not in self.values:
            raise nats.js.errors.KeyNotFoundError
        return types.SimpleNamespace(value=self.values[key])


class Records:
    """The queue records as `checks.Records` gives them: `values` by key."""

    def __init__(self, **values: bytes) -> None:
        self.values = values

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)


class Bus:
    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    async def publish(self, subject: str, event: Any, *, msg_id: str) -> None:
        self.published.append((subject, event))


def delivered(times: int) -> tuple[worker.Worker, Bus, Any]:
    """A worker, its bus, and the JetStream message of a genuine job delivered `times` times."""
    record = queue.Entry(
        id=MESSAGE_ID,
        state=queue.State.DELIVERING,
        sender="alice@example.org",
        recipients=(queue.RecipientState(address="bob@example.com"),),
        size=10,
        body_key=BODY_KEY,
        received_at=datetime.now(UTC),
        attempts=2,
        client=events.Client(ip="192.0.2.1"),
    )
    job = events.DeliveryJob(
        id=MESSAGE_ID, attempt=2, body_key=BODY_KEY, size=10, envelope=record.envelope()
    )
    deliverer = a_worker()
    deliverer.frozen = flags.Cached(Bucket())  # type: ignore[arg-type]  # not frozen
    deliverer.queue = Records(**{names.queue_key(MESSAGE_ID): record.model_dump_json().encode()})  # type: ignore[assignment]
    deliverer.bus = Bus()  # type: ignore[assignment]
    msg = types.SimpleNamespace(
        data=job.model_dump_json().encode(),
        headers={},
        subject=names.JOBS_SUBJECT,
        metadata=types.SimpleNamespace(num_delivered=times),
    )
    return deliverer, deliverer.bus, msg  # type: ignore[return-value]


async def test_a_job_past_its_deliveries_is_a_deferred_attempt_not_tried() -> None:
    deliverer, published, msg = delivered(worker.MAX_DELIVERIES + 1)

    await deliverer.handle(msg)

    [(subject, outcome)] = published.published
    assert subject == names.ATTEMPTED_SUBJECT
    assert (outcome.id, outcome.attempt) == (MESSAGE_ID, 2)
    assert [(r.address, r.outcome, r.reply, r.remote) for r in outcome.results] == [
        (
            "bob@example.com",
            "deferred",
            f"451 4.3.0 The delivery job came back {worker.MAX_DELIVERIES} times without an "
            "outcome",
            None,
        )
    ]


@pytest.mark.parametrize(
    ("times", "backoff_to", "delay"),
    [
        (1, None, 5.0),
        (4, None, 5.0),
        (1, 120.0, 5.0),
        (2, 120.0, 10.0),
        (4, 120.0, 40.0),
        (6, 120.0, 120.0),
        (60, 120.0, 120.0),
    ],
)
def test_a_job_put_back_comes_again_later_each_time(
    times: int, backoff_to: float | None, delay: float
) -> None:
    msg = types.SimpleNamespace(metadata=types.SimpleNamespace(num_delivered=times))
    assert bus.retry_delay_of(msg, 5.0, backoff_to) == delay  # type: ignore[arg-type]
