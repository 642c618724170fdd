"""The spool: accepted messages become queue records, once, whatever happens to the events."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from empath.core import events, ids, names, queue, signing, store
from tests.system import StartSystem, System
from tests.waiting import eventually
from tests.wire import Wire


async def request(system: System, subject: str, body: Any) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await system.bus.nc.request(subject, data, timeout=5)
    return dict(json.loads(reply.data))


async def queue_messages(system: System, count: int, *, port: int | None = None) -> list[str]:
    wire = await Wire.open(port or system.smtp_port)
    await wire.command("EHLO client.test")
    queued = []
    for n in range(count):
        reply = await wire.transaction(
            f"s{n}@example.org",
            ["u@example.com"],
            f"Subject: {n}\r\n\r\nx\r\n".encode(),
            ehlo=False,
        )
        queued.append(reply.rsplit(" ", 1)[1])
    await wire.close()
    return queued


def received_event(body_key: str, message_id: str | None = None) -> events.Received:
    message_id = message_id or ids.new_id()
    now = datetime.now(UTC)
    return events.Received(
        id=message_id,
        body_key=body_key,
        size=3,
        received_at=now,
        envelope=events.Envelope(
            sender="a@example.org", recipients=(events.Recipient(address="u@example.com"),)
        ),
        client=events.Client(ip="192.0.2.1"),
    )


async def test_an_accepted_message_is_recorded_as_queued(system: System) -> None:
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@example.org> RET=FULL ENVID=e1")
    await wire.command("RCPT TO:<u@example.com> NOTIFY=FAILURE")
    await wire.command("RCPT TO:<v@example.com>")
    await wire.command("DATA")
    await wire.send(b"Subject: q\r\n\r\nx\r\n.\r\n")
    queue_id = (await wire.reply()).rsplit(" ", 1)[1]
    entry = await system.entry(queue_id)
    assert entry.state == queue.State.QUEUED
    assert entry.sender == "a@example.org"
    assert [(r.address, r.status, r.notify) for r in entry.recipients] == [
        ("u@example.com", "pending", ("FAILURE",)),
        ("v@example.com", "pending", None),
    ]
    assert (entry.ret, entry.envid, entry.attempts) == ("FULL", "e1", 0)
    assert entry.next_attempt == entry.received_at
    assert entry.body_key == store.body_key(queue_id, entry.received_at)
    assert entry.client.ip == "127.0.0.1"
    assert entry.client.helo == "client.test"
    assert await system.objects.exists(entry.body_key)
    await wire.close()


async def test_a_job_goes_out_unsigned_while_its_received_event_is_signed(
    start_system: StartSystem,
) -> None:
    """Delivery checks a job against the record it names, never a signature: the spool does
    not sign jobs (a signature of each job and its body cost it 50-110 us a message). What
    ingress publishes, and what the spool queues itself (its DSNs), is signed as before."""
    system = await start_system()
    [queue_id] = await queue_messages(system, 1)
    await eventually(
        lambda: system.bus.js.stream_info(names.JOBS_STREAM.name),
        until=lambda info: info.state.messages == 1,
        what="the message's first job",
    )
    job = await system.bus.js.get_last_msg(names.JOBS_STREAM.name, names.JOBS_SUBJECT)
    assert job.data is not None
    assert events.decode(job.data, events.DeliveryJob).id == queue_id
    assert (job.headers or {}).get("Nats-Msg-Id") == f"{queue_id}.1"
    assert signing.HEADER not in (job.headers or {})
    received = await system.bus.js.get_last_msg(names.RECEIVED_STREAM.name, names.RECEIVED_SUBJECT)
    assert signing.HEADER in (received.headers or {})


async def test_a_redelivered_event_does_not_reset_the_record(system: System) -> None:
    key = store.body_key("X", datetime.now(UTC))
    await system.objects.put(key, b"x\r\n")
    event = received_event(key)
    await system.bus.publish(names.RECEIVED_SUBJECT, event, msg_id="first")
    entry = await system.entry(event.id)
    # The message moves on (as a later delivery would move it) ...
    moved = entry.model_copy(update={"state": queue.State.DEFERRED, "attempts": 1})
    await system.records.kv.put(names.queue_key(event.id), moved.model_dump_json().encode())
    # ... and the same event arrives again (a redelivery, under another message id).
    await system.bus.publish(names.RECEIVED_SUBJECT, event, msg_id="second")
    await wait_consumed(system)
    again = await system.records.get(event.id)
    assert (again.state, again.attempts) == (queue.State.DEFERRED, 1)


async def wait_consumed(system: System) -> None:
    """Until the spool has acked every `received` event published so far."""
    await system.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)


async def test_an_undecodable_event_is_terminated_not_retried_forever(system: System) -> None:
    # Version 0: older than any this spool reads (a newer one would wait for an upgrade).
    await system.bus.js.publish(names.RECEIVED_SUBJECT, b'{"kind": "received", "version": 0}')
    await wait_consumed(system)
    info = await system.bus.js.consumer_info(
        names.RECEIVED_STREAM.name, names.SPOOL_RECEIVED_CONSUMER
    )
    assert info.num_redelivered == 0
    assert await system.entries() == []


async def test_two_spool_replicas_record_every_message_once(start_system: StartSystem) -> None:
    system = await start_system(frozen=True)
    second = await start_system(only=("spool",))
    sent = await asyncio.gather(*(queue_messages(system, 10) for _ in range(4)))
    queued = sorted(i for batch in sent for i in batch)
    for queue_id in queued:
        await system.entry(queue_id)
    entries = await system.entries()
    assert [e.id for e in entries] == queued
    assert all(e.state == queue.State.QUEUED for e in entries)
    await wait_consumed(system)
    await second.stop()


async def test_the_query_api_lists_gets_and_counts(system: System) -> None:
    queued = await queue_messages(system, 5)
    await system.listed(5)

    counts = await request(system, names.QUERY_COUNTS_SUBJECT, {})
    assert counts["counts"]["queued"] == 5
    assert counts["counts"]["total"] == 5
    assert counts["counts"]["deferred"] == 0

    first = await request(system, names.QUERY_LIST_SUBJECT, {"limit": 2})
    assert [i["id"] for i in first["items"]] == queued[:2]
    assert first["next_after"] == queued[1]
    rest = await request(system, names.QUERY_LIST_SUBJECT, {"limit": 10, "after": queued[1]})
    assert [i["id"] for i in rest["items"]] == queued[2:]
    assert rest["next_after"] is None
    none = await request(system, names.QUERY_LIST_SUBJECT, {"state": "deferred"})
    assert none["items"] == []

    got = await request(system, names.QUERY_GET_SUBJECT, {"id": queued[3]})
    assert got["item"]["sender"] == "s3@example.org"
    assert got["item"]["recipients"][0]["status"] == "pending"


@pytest.mark.parametrize(
    ("subject", "body", "code", "reason"),
    [
        (names.QUERY_LIST_SUBJECT, {"state": "lost"}, 400, "unknown state"),
        (names.QUERY_LIST_SUBJECT, {"limit": 0}, 400, "limit"),
        (names.QUERY_LIST_SUBJECT, {"limit": "ten"}, 400, "limit"),
        (names.QUERY_LIST_SUBJECT, {"after": "../etc"}, 400, "after"),
        (names.QUERY_LIST_SUBJECT, b"not json", 400, "not JSON"),
        (names.QUERY_LIST_SUBJECT, [1, 2], 400, "JSON object"),
        (names.QUERY_GET_SUBJECT, {"id": "nope"}, 400, "queue id"),
        (names.QUERY_GET_SUBJECT, {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 404, "no message"),
    ],
)
async def test_a_bad_query_gets_a_reason(
    system: System, subject: str, body: Any, code: int, reason: str
) -> None:
    reply = await request(system, subject, body)
    assert reply["code"] == code
    assert reason in reply["error"]


async def test_a_record_written_by_a_newer_spool_is_still_read_and_served(system: System) -> None:
    [queue_id] = await queue_messages(system, 1)
    record = json.loads((await system.entry(queue_id)).model_dump_json())
    record["priority"] = "bulk"  # a field a newer spool might add
    record["recipients"][0]["hint"] = 1
    await system.records.kv.put(names.queue_key(queue_id), json.dumps(record).encode())

    assert (await system.records.get(queue_id)).id == queue_id
    got = await request(system, names.QUERY_GET_SUBJECT, {"id": queue_id})
    assert got["item"]["sender"] == "s0@example.org"
    assert "priority" not in got["item"]


async def test_a_record_that_does_not_load_is_answered_503_at_once(system: System) -> None:
    broken = ids.new_id()
    await system.records.kv.put(names.queue_key(broken), b'{"id": "' + broken.encode() + b'"}')

    reply = await request(system, names.QUERY_GET_SUBJECT, {"id": broken})

    assert reply["code"] == 503
    assert "ValidationError" in reply["error"]
