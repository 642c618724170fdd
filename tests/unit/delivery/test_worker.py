"""Delivery turns every failure of one domain's delivery into an outcome for its recipients:
an error that escaped the worker would send the job back again and again, no attempt counted."""

from __future__ import annotations

import types
from typing import Any

import pytest

from empath.core import errors, events
from empath.core import settings as config
from empath.delivery import client, resolver
from tests.unit.delivery.remote import a_worker, job


async def test_an_error_nobody_foresaw_defers_the_recipients_with_its_kind(
    monkeypatch: Any,
) -> None:
    async def connect(*args: Any, **kwargs: Any) -> client.Connection:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(client, "connect", connect)
    recipients = [
        events.Recipient(address="b@example.com"),
        events.Recipient(address="c@example.com"),
    ]

    results = await a_worker().deliver_safely(job(*recipients), "example.com", recipients, b"x")

    assert [(r.address, r.outcome, r.reply) for r in results] == [
        (a, "deferred", "451 4.3.0 Delivery to example.com failed: UnicodeEncodeError")
        for a in ("b@example.com", "c@example.com")
    ]


async def test_a_body_the_store_cannot_give_now_is_a_deferred_attempt() -> None:
    class Down:
        async def get(self, key: str) -> bytes:
            raise errors.StoreUnavailable(f"get {key}: connection refused")

    deliverer = a_worker()
    deliverer.objects = Down()  # type: ignore[assignment]

    results = await deliverer.attempt(job("b@example.com", "c@example.net"))

    assert [(r.address, r.outcome, r.reply) for r in results] == [
        (a, "deferred", "451 4.3.0 The message body cannot be read from the spool now")
        for a in ("b@example.com", "c@example.net")
    ]


@pytest.mark.parametrize("value", [b"a/b:25", b":25", b"h:25:26", b"\xff\xfe"])
async def test_a_malformed_runtime_mx_override_defers_its_domain_with_a_reason(
    value: bytes,
) -> None:
    class Overrides:
        async def get(self, key: str) -> Any:
            return types.SimpleNamespace(value=value)

    settings = config.load(environment=False, hostname="mx.test")
    routes = resolver.Resolver(settings, runtime_overrides=Overrides())  # type: ignore[arg-type]

    with pytest.raises(resolver.DeliveryDeferred) as deferred:
        await routes.route("example.com")
    assert deferred.value.reply == "451 4.3.5 The MX override for example.com is not a host[:port]"
