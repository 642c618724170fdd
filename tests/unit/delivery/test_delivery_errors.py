"""A delivery error says by its type whether its recipients are deferred or failed; the base
type says neither, so it cannot be raised (it would have bounced them as failed)."""

from __future__ import annotations

from typing import Any

import pytest

from empath.core import events
from empath.delivery import resolver
from tests.unit.delivery.remote import a_worker, job


def test_the_base_delivery_error_cannot_be_made() -> None:
    with pytest.raises(TypeError, match="DeliveryDeferred or DeliveryFailed"):
        resolver.DeliveryError("451 4.4.1 No answer")


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (resolver.DeliveryDeferred("451 4.4.1 No answer from any MX"), "deferred"),
        (resolver.DeliveryFailed("550 5.1.2 example.com has a null MX"), "failed"),
    ],
)
async def test_the_recipients_outcome_follows_the_errors_type(
    error: resolver.DeliveryError, outcome: events.Outcome
) -> None:
    class Routes:
        async def route(self, domain: str) -> Any:
            raise error

    deliverer = a_worker()
    deliverer.routes = Routes()  # type: ignore[assignment]
    recipients = [events.Recipient(address="b@example.com")]

    results = await deliverer.deliver_safely(job(*recipients), "example.com", recipients, b"x")

    assert [(r.outcome, r.reply) for r in results] == [(outcome, error.reply)]
