"""Delivery end to end: SMTP in, real DNS on loopback, aiosmtpd remote MX hosts out.

Each remote MX listens on its own loopback address (127.0.0.2, .3, ...) on one shared port,
which the delivery service is told with EMPATH_DELIVERY_PORT, so MX records resolve exactly as
they would on the Internet.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Callable
from typing import Any

import pytest

from empath.core import dnscache, names
from empath.spool import dsn
from tests.dns_server import DnsServer
from tests.mail import BODY, arrivals, mx, send, settle
from tests.waiting import eventually


async def test_a_message_reaches_the_mx_byte_for_byte_plus_the_trace_header(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    system = await relay()
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "delivered")
    await arrivals(server, 1)
    arrived = server.arrived[0]
    assert (arrived.sender, arrived.recipients) == ("a@sender.test", ["u@dest.test"])
    trace, _, rest = arrived.data.partition(b"Subject: hello")
    assert trace.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Empath)")
    assert b"Subject: hello" + rest == BODY
    assert entry.recipients[0].status == "delivered"
    assert entry.recipients[0].last_reply == "250 2.0.0 Ok: queued as R1"
    assert entry.recipients[0].remote == "mx1.dest.test"
    await eventually(
        lambda: system.objects.exists(entry.body_key),
        until=lambda there: not there,
        what="the body to be removed",
    )


async def test_each_domain_goes_to_its_own_mx(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    one, two = await remote("127.0.0.2"), await remote("127.0.0.3")
    mx(dns, "one.test", (10, "mx.one.test", "127.0.0.2"))
    mx(dns, "two.test", (10, "mx.two.test", "127.0.0.3"))
    system = await relay()
    queue_id = await send(system, "a@sender.test", ["a@one.test", "b@two.test", "c@one.test"])
    await settle(system, queue_id, "delivered")
    assert [a.recipients for a in one.arrived] == [["a@one.test", "c@one.test"]]
    assert [a.recipients for a in two.arrived] == [["b@two.test"]]


async def test_one_refused_recipient_fails_alone_and_is_bounced(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    dest = await remote("127.0.0.2", refuse={"nobody@dest.test": "550 5.1.1 No such user"})
    sender_mx = await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "sender.test", (10, "mx.sender.test", "127.0.0.3"))
    system = await relay()
    queue_id = await send(
        system, "a@sender.test", ["u@dest.test", "nobody@dest.test"], ENVID="env-42"
    )
    entry = await settle(system, queue_id, "failed")
    assert [(r.address, r.status) for r in entry.recipients] == [
        ("u@dest.test", "delivered"),
        ("nobody@dest.test", "failed"),
    ]
    assert dest.arrived[0].recipients == ["u@dest.test"]

    await arrivals(sender_mx, 1)
    bounce = sender_mx.arrived[0]
    assert (bounce.sender, bounce.recipients) == ("<>", ["a@sender.test"])  # aiosmtpd: null path
    report = email.message_from_bytes(bounce.data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    notice, status, original = report.iter_parts()
    assert "nobody@dest.test" in notice.get_content()
    assert status.get_content_type() == "message/delivery-status"
    fields = status.as_string()
    assert "Reporting-MTA: dns; mx.test" in fields
    assert "Original-Envelope-Id: env-42" in fields
    assert "Final-Recipient: rfc822; nobody@dest.test" in fields
    assert "Action: failed" in fields
    assert "Status: 5.1.1" in fields
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user" in fields
    assert "u@dest.test" not in fields
    assert original.get_content_type() == "message/rfc822"
    assert b"line one\r\n.leading dot\r\n" in bounce.data


async def test_a_large_message_bounces_with_its_headers_only(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    """Over 256 KiB and no RET: the DSN returns the headers (RFC 3461 leaves it to the MTA),
    which the spool reads from the head of the stored body (a ranged GET, not the whole)."""
    await remote("127.0.0.2", refuse={"nobody@dest.test": "550 5.1.1 No such user"})
    sender_mx = await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "sender.test", (10, "mx.sender.test", "127.0.0.3"))
    system = await relay()
    body = (
        b"From: a@sender.test\r\nSubject: the big one\r\nMessage-ID: <big@sender.test>\r\n\r\n"
        + b"".join(b"line %06d of the body\r\n" % n for n in range(30000))
    )
    assert len(body) > 2 * dsn.FULL_LIMIT
    queue_id = await send(system, "a@sender.test", ["nobody@dest.test"], body)
    await settle(system, queue_id, "failed")

    await arrivals(sender_mx, 1)
    report = email.message_from_bytes(sender_mx.arrived[0].data, policy=email.policy.default)
    returned = list(report.iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    text = returned.as_bytes()
    assert b"Message-ID: <big@sender.test>" in text
    assert b"Received: from client.test" in text  # ingress's own header, first in the body
    assert b"line 000000 of the body" not in sender_mx.arrived[0].data
    assert len(sender_mx.arrived[0].data) < 16 * 1024


async def test_a_temporary_failure_is_retried_on_schedule_and_then_delivered(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", rcpt_reply="451 4.3.0 Greylisted, try later")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(retry_schedule=[0, 2])
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    deferred = await settle(system, queue_id, "deferred")
    assert deferred.last_reply == "451 4.3.0 Greylisted, try later"
    assert deferred.recipients[0].status == "deferred"
    assert deferred.attempts == 1
    assert deferred.next_attempt is not None
    wait = (deferred.next_attempt - deferred.history[-1].finished_at).total_seconds()
    assert 1.9 <= wait <= 2.5
    server.rcpt_reply = None
    delivered = await settle(system, queue_id, "delivered")
    assert delivered.attempts == 2
    assert [h.results[0].outcome for h in delivered.history] == ["deferred", "delivered"]
    assert delivered.history[1].started_at >= deferred.next_attempt
    assert len(server.arrived) == 1


async def test_a_connection_dropped_in_data_is_deferred(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", drop_in_data=True)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(retry_schedule=[0, 3600])
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "deferred")
    assert entry.last_reply is not None
    assert entry.last_reply.startswith("451 4.4.2 ")
    assert await system.objects.exists(entry.body_key)


async def test_a_message_that_expires_is_bounced(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", rcpt_reply="450 4.2.1 Mailbox busy")
    sender_mx = await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "sender.test", (10, "mx.sender.test", "127.0.0.3"))
    system = await relay(retry_schedule=[0, 0.5], max_attempts=3)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "failed")
    assert entry.attempts == 3
    assert "gave up after 3 attempts" in (entry.recipients[0].last_reply or "")
    await arrivals(sender_mx, 1)
    assert b"Status: 4.4.7" in sender_mx.arrived[0].data


async def test_the_mx_hosts_are_tried_in_preference_order(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    backup = await remote("127.0.0.3")
    # The preferred MX (127.0.0.2) has no server: the backup takes the message.
    mx(dns, "dest.test", (5, "mx1.dest.test", "127.0.0.2"), (20, "mx2.dest.test", "127.0.0.3"))
    system = await relay()
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "delivered")
    assert entry.recipients[0].remote == "mx2.dest.test"
    assert len(backup.arrived) == 1


async def test_a_domain_without_mx_gets_mail_at_its_address(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    dns.add("plain.test", "A", "127.0.0.2")
    system = await relay()
    queue_id = await send(system, "a@sender.test", ["u@plain.test"])
    entry = await settle(system, queue_id, "delivered")
    assert entry.recipients[0].remote == "plain.test"
    assert len(server.arrived) == 1


@pytest.mark.parametrize(
    ("domain", "setup", "outcome", "reply"),
    [
        ("nullmx.test", lambda d: d.add("nullmx.test", "MX", "0 ."), "failed", "556 5.1.10 "),
        ("missing.test", lambda d: None, "failed", "550 5.1.2 "),
        ("broken.test", lambda d: d.servfail.add("broken.test"), "deferred", "451 4.4.3 "),
    ],
    ids=["null-mx", "nxdomain", "servfail"],
)
async def test_dns_answers_decide_permanent_or_temporary(
    relay: Callable[..., Any],
    dns: DnsServer,
    domain: str,
    setup: Callable[[DnsServer], None],
    outcome: str,
    reply: str,
) -> None:
    setup(dns)
    system = await relay(retry_schedule=[0, 3600])
    queue_id = await send(system, "", [f"u@{domain}"])
    entry = await settle(system, queue_id, outcome)
    assert entry.recipients[0].status == outcome
    assert (entry.recipients[0].last_reply or "").startswith(reply)


async def test_dns_answers_are_cached_for_their_ttl(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"), ttl=300)
    mx(dns, "short.test", (10, "mx.short.test", "127.0.0.2"), ttl=1)
    system = await relay()
    for _ in range(3):
        await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert dns.queries[("dest.test", "MX")] == 1
    await settle(system, await send(system, "a@sender.test", ["u@short.test"]), "delivered")
    dns_cache = await system.bus.key_value(names.DNS_BUCKET)

    async def cached() -> bool:
        return dnscache.read((await dns_cache.get(dnscache.key("short.test"))).value) is not None

    await eventually(cached, until=lambda still: not still, what="short.test's 1 s TTL to pass")
    await settle(system, await send(system, "a@sender.test", ["u@short.test"]), "delivered")
    assert dns.queries[("short.test", "MX")] == 2
    assert len(server.arrived) == 5


async def test_an_open_session_is_reused_for_the_next_messages(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(delivery_messages_per_connection=3)
    for _ in range(5):
        await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert len(server.arrived) == 5
    assert server.sessions == 2  # three messages on the first session, two on the second


async def test_per_destination_limits_hold(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", data_delay=0.2)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(
        delivery_rate_per_domain=4,
        delivery_max_connections_per_domain=2,
        delivery_concurrency=10,
    )
    ids = await asyncio.gather(*(send(system, "a@sender.test", ["u@dest.test"]) for _ in range(8)))
    for queue_id in ids:
        await settle(system, queue_id, "delivered")
    assert server.most_open <= 2
    times = sorted(a.at for a in server.arrived)
    assert times[-1] - times[0] >= (len(times) - 1) / 4 - 0.3  # no faster than 4 a second


async def test_a_failure_from_the_null_sender_is_never_bounced(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", refuse={"gone@dest.test": "550 5.1.1 Gone"})
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    queue_id = await send(system, "", ["gone@dest.test"])
    await settle(system, queue_id, "failed")
    # A bounce is queued (published as `received`) before the failure is recorded: once the
    # spool has taken in every `received` event there is, any bounce would be in the queue.
    await system.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
    assert [e.id for e in await system.entries()] == [queue_id]
