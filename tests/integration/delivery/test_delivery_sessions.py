"""Outbound sessions as the README describes them: connect and command timeouts, idle sessions
closed, kept sessions reused (RSET only after an unfinished transaction, a new session when
the remote closed the kept one), equal-preference MX hosts in random order, and what the
remote must offer (8BITMIME)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from empath.core import queue
from tests.dns_server import DnsServer
from tests.mail import mx, send, settle
from tests.remote import Mute, Unreachable
from tests.waiting import eventually


def took(entry: queue.Entry) -> float:
    """Seconds the last attempt of a message took, as its history records it."""
    last = entry.history[-1]
    return (last.finished_at - last.started_at).total_seconds()


async def test_a_host_that_never_completes_the_connect_is_given_up_after_the_connect_timeout(
    relay: Callable[..., Any], dns: DnsServer, mx_port: int
) -> None:
    hole = Unreachable("127.0.0.2", mx_port)
    hole.start()
    try:
        mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
        system = await relay(
            delivery_connect_timeout=1.0, delivery_command_timeout=60, retry_schedule=[0, 3600]
        )
        entry = await settle(system, await send(system, "", ["u@dest.test"]), "deferred")
    finally:
        hole.close()
    assert (entry.last_reply or "").startswith(
        f"451 4.4.1 Cannot connect to mx.dest.test[127.0.0.2]:{mx_port}: "
    )
    assert 1.0 <= took(entry) < 10, took(entry)


async def deferred_by(
    mute: Mute, relay: Callable[..., Any], dns: DnsServer
) -> tuple[Mute, queue.Entry]:
    """Send one message to dest.test, whose only MX is `mute` (1 s command timeout, a long
    connect timeout), and return the host and the record once the attempt was deferred."""
    await mute.start()
    try:
        mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
        system = await relay(
            delivery_connect_timeout=60, delivery_command_timeout=1.0, retry_schedule=[0, 3600]
        )
        entry = await settle(system, await send(system, "", ["u@dest.test"]), "deferred")
    finally:
        await mute.close()
    return mute, entry


async def test_a_host_that_accepts_and_never_greets_is_given_up_after_the_command_timeout(
    relay: Callable[..., Any], dns: DnsServer, mx_port: int
) -> None:
    mute, entry = await deferred_by(Mute(host="127.0.0.2", port=mx_port), relay, dns)
    assert mute.sessions == 1
    assert entry.last_reply == (
        f"451 4.4.2 mx.dest.test[127.0.0.2]:{mx_port} dropped the session: TimeoutError: "
    )
    assert 1.0 <= took(entry) < 10, took(entry)


async def test_a_host_that_stops_answering_mid_session_is_given_up_after_the_command_timeout(
    relay: Callable[..., Any], dns: DnsServer, mx_port: int
) -> None:
    mute, entry = await deferred_by(Mute(host="127.0.0.2", port=mx_port, greet=True), relay, dns)
    # It greeted and answered EHLO; the transaction went out, and no reply came back.
    assert mute.heard.endswith(b"MAIL FROM:<>\r\nRCPT TO:<u@dest.test>\r\nDATA\r\n")
    assert entry.last_reply == "451 4.4.2 mx.dest.test dropped the session: TimeoutError: "
    assert 1.0 <= took(entry) < 10, took(entry)


async def test_an_idle_session_is_closed_after_the_idle_timeout_and_not_reused(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(delivery_idle_timeout=1.0)
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    await eventually(lambda: server.closed_at, what="the idle session to be closed")
    assert server.open_sessions == 0
    idle = server.closed_at[0] - server.arrived[0].at
    assert 1.0 <= idle < 5, idle  # kept while it might serve again, then closed
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert server.sessions == 2  # the next message opened a session of its own


async def test_a_kept_session_goes_on_without_rset_after_a_finished_transaction_only(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", refuse={"gone@dest.test": "550 5.1.1 Gone"})
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    for _ in range(3):
        await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert (server.sessions, server.resets) == (1, 0)  # DATA answered ends each transaction
    # MAIL accepted, the only recipient refused, no DATA: the transaction is still open.
    await settle(system, await send(system, "a@sender.test", ["gone@dest.test"]), "failed")
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert (server.sessions, server.resets) == (1, 1)
    assert len(server.arrived) == 4


async def test_a_kept_session_the_remote_closed_is_replaced_without_a_failed_attempt(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", idle_timeout=0.5)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(delivery_idle_timeout=60)
    await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    await eventually(lambda: server.closed_at, what="the remote to close the idle session")
    entry = await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "delivered")
    assert entry.attempts == 1  # not deferred: the message went on a new session
    assert (server.sessions, len(server.arrived)) == (2, 2)


async def test_mx_hosts_of_equal_preference_are_tried_first_in_random_order(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    one, two = await remote("127.0.0.2"), await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"), (10, "mx2.dest.test", "127.0.0.3"))
    system = await relay()
    # Both hosts take mail, so the host a message reaches is the one tried first for it.
    sent = await asyncio.gather(
        *(send(system, "a@sender.test", [f"u{n}@dest.test"]) for n in range(16))
    )
    firsts = [
        (await settle(system, queue_id, "delivered")).recipients[0].remote for queue_id in sent
    ]
    assert len(one.arrived) + len(two.arrived) == 16
    # Each order has even odds: one host first all 16 times would happen once in 32,768 runs.
    assert set(firsts) == {"mx1.dest.test", "mx2.dest.test"}, firsts


async def test_8bit_mail_fails_at_a_host_that_does_not_offer_8bitmime(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", without=("8BITMIME",))
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    eight_bit = "Subject: 8 bit\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode()
    failed = await send(system, "", ["u@dest.test"], eight_bit, BODY="8BITMIME")
    entry = await settle(system, failed, "failed")
    assert entry.last_reply == "554 5.6.3 mx.dest.test does not support 8BITMIME"
    assert server.arrived == []
    # The same host takes mail that needs nothing it lacks.
    plain = await send(system, "", ["u@dest.test"], b"Subject: plain\r\n\r\nx\r\n")
    await settle(system, plain, "delivered")
    assert len(server.arrived) == 1
    assert "BODY=8BITMIME" not in server.arrived[0].mail_options
