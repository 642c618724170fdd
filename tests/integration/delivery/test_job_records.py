"""Delivery reads a job's queue record with one JetStream API get of its own (`checks.Records`):
against a real nats-server it finds what the KV bucket holds, and nothing for a key that was
never written, deleted, purged, or is no key at all (a wildcard in a forged job's id)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from empath.core import errors, events, names
from empath.delivery import checks


def job_of(queue_id: str) -> events.DeliveryJob:
    """A job for message `queue_id` (whatever its record says)."""
    return events.DeliveryJob(
        id=queue_id,
        attempt=1,
        body_key="bodies/x",
        size=1,
        envelope=events.Envelope(sender="", recipients=(events.Recipient(address="a@b.test"),)),
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def test_a_record_is_read_as_the_bucket_holds_it_and_a_gone_one_is_none(nc: NATS) -> None:
    kv = await nc.jetstream().create_key_value(bucket=names.QUEUE_BUCKET, history=1)
    records = checks.Records(nc, timeout=2.0)
    await kv.put("msg.kept", b'{"state": "delivering"}')
    await kv.put("msg.kept", b'{"state": "delivering", "attempts": 2}')  # the last one counts
    for key in ("msg.deleted", "msg.purged"):
        await kv.put(key, b"{}")
    await kv.delete("msg.deleted")
    await kv.purge("msg.purged")

    assert await records.get("msg.kept") == b'{"state": "delivering", "attempts": 2}'
    for key in ("msg.never", "msg.deleted", "msg.purged", "msg.>", "msg.*", 'msg."', "", "a b"):
        assert await records.get(key) is None, key


async def test_a_job_whose_id_is_a_wildcard_is_refused_as_not_in_the_queue(nc: NATS) -> None:
    kv = await nc.jetstream().create_key_value(bucket=names.QUEUE_BUCKET, history=1)
    await kv.put("msg.01KJP5Z4M0ABCDEFGHJKMNPQRS", b'{"state": "delivering"}')
    refused = await checks.refusal(checks.Records(nc, timeout=2.0), job_of(">"))
    assert refused == "the message is not in the queue"


async def test_a_record_that_cannot_be_read_now_is_a_temporary_error(nc: NATS) -> None:
    # No queue bucket (its stream is missing): NATS answers with an error, not a record.
    with pytest.raises(errors.BusUnavailable):
        await checks.refusal(checks.Records(nc, timeout=2.0), job_of("01KJP5Z4M0ABCDEFGHJKMNPQRS"))
