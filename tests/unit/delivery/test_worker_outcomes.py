"""An outcome that cannot be published while NATS restarts is published again, not the mail:
the remote already took it, and a job sent back would deliver it a second time (issue 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from empath.core import errors, events, names
from empath.delivery import worker
from tests.unit.delivery.remote import a_worker


class Restarting:
    """A bus that refuses `failures` publishes (NATS away), then takes them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[tuple[str, events.Attempted, str]] = []

    async def publish(self, subject: str, event: Any, *, msg_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise errors.BusUnavailable("not connected to NATS")
        self.published.append((subject, event, msg_id))


def outcome() -> events.Attempted:
    now = datetime.now(UTC)
    return events.Attempted(
        id="01KJP5Z4M0ABCDEFGHJKMNPQRS",
        attempt=3,
        started_at=now,
        finished_at=now,
        worker="w",
        results=(
            events.RecipientResult(address="b@example.com", outcome="delivered", reply="250"),
        ),
    )


async def test_an_outcome_refused_while_nats_restarts_is_published_once_it_is_back() -> None:
    deliverer = a_worker()
    deliverer.bus = Restarting(failures=2)  # type: ignore[assignment]
    event = outcome()

    await deliverer.report(event)

    assert [(s, e.id, m) for s, e, m in deliverer.bus.published] == [  # type: ignore[attr-defined]
        (names.ATTEMPTED_SUBJECT, event.id, f"{event.id}.3")
    ]


async def test_an_outcome_that_cannot_be_published_for_too_long_sends_the_job_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "OUTCOME_PATIENCE", 0.5)
    deliverer = a_worker()
    deliverer.bus = Restarting(failures=1000)  # type: ignore[assignment]

    with pytest.raises(errors.BusUnavailable):
        await deliverer.report(outcome())
    assert deliverer.bus.published == []  # type: ignore[attr-defined]
