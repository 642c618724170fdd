"""TLS policies, DSN handling, freeze and hold, and a worker killed in the middle of a delivery."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme

from empath.core import flags, names
from empath.spool import controls
from tests import fleet, servers
from tests.dns_server import DnsServer
from tests.mail import mx, send, settle
from tests.system import StartSystem, System
from tests.waiting import eventually


@pytest.fixture
def downstream_nats(tmp_path: Path) -> Iterator[str]:
    """A second nats-server, for a second, independent Empath. A test names it first among
    its fixtures, so it stops after the services that use it."""
    with servers.nats_server(tmp_path / "second-nats") as url:
        yield url


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.mark.parametrize(
    ("policy", "cert_for", "trusted", "outcome", "tls"),
    [
        ("verify", "mx.dest.test", True, "delivered", "verified"),
        ("verify", "mx.dest.test", False, "deferred", None),
        ("verify", "wrong.name.test", True, "deferred", None),
        ("opportunistic", "wrong.name.test", False, "delivered", "not verified (opportunistic)"),
        ("required", "mx.dest.test", True, "delivered", "verified"),
        ("none", "mx.dest.test", True, "delivered", "none (policy none)"),
    ],
)
async def test_tls_policy_with_a_starttls_server(
    relay: Callable[..., Any],
    remote: Callable[..., Any],
    dns: DnsServer,
    ca: trustme.CA,
    ca_file: Path,
    policy: str,
    cert_for: str,
    trusted: bool,
    outcome: str,
    tls: str | None,
) -> None:
    server = await remote("127.0.0.2", tls_context=server_tls(ca, cert_for))
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(
        tls_policies={"dest.test": policy},
        tls_ca_file=ca_file if trusted else None,
        retry_schedule=[0, 3600],
    )
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    entry = await settle(system, queue_id, "delivered" if outcome == "delivered" else "deferred")
    result = entry.history[-1].results[0]
    if outcome == "delivered":
        assert tls is not None
        assert tls in (result.tls or "")
        assert server.arrived[0].tls == (policy != "none")
    else:
        assert result.reply.startswith("451 4.7.5 TLS with mx.dest.test failed (verify)")
        assert server.arrived == []


async def test_tls_required_defers_when_starttls_is_not_offered(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(tls_policy="required", retry_schedule=[0, 3600])
    entry = await settle(system, await send(system, "a@sender.test", ["u@dest.test"]), "deferred")
    assert entry.last_reply == (
        "451 4.7.5 mx.dest.test does not offer STARTTLS and TLS is required"
    )
    assert server.arrived == []


async def test_a_message_bigger_than_the_remote_takes_fails(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", size_limit=100)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    entry = await settle(system, await send(system, "", ["u@dest.test"]), "failed")
    assert (entry.last_reply or "").startswith("552 5.3.4 Message is bigger than mx.dest.test")
    assert server.arrived == []


async def test_dsn_parameters_pass_on_to_a_dsn_capable_server(
    downstream_nats: str,
    relay: Callable[..., Any],
    start_system: StartSystem,
    dns: DnsServer,
    mx_port: int,
) -> None:
    # The remote is another Empath, with its own NATS and bucket: it speaks DSN, and its queue
    # shows what it was given.
    own = {"nats_url": downstream_nats, "s3_bucket": "downstream"}
    downstream = await start_system(
        frozen=True,
        direct=own,
        smtp_listen=f"127.0.0.2:{mx_port}",
        relay_domains=["dest.test"],
        trusted_networks=["10.0.0.0/8"],
        **own,
    )
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<a@sender.test> RET=HDRS ENVID=track+2B1")
    await wire.command("RCPT TO:<u@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@dest.test")
    await wire.command("DATA")
    await wire.send(b"Subject: dsn\r\n\r\nx\r\n.\r\n")
    queue_id = (await wire.reply()).rsplit(" ", 1)[1]
    await wire.close()
    entry = await settle(system, queue_id, "delivered")
    assert entry.history[0].results[0].dsn
    remote_id = (entry.recipients[0].last_reply or "").rsplit(" ", 1)[1]
    passed = await downstream.entry(remote_id)
    assert (passed.ret, passed.envid) == ("HDRS", "track+2B1")
    assert passed.recipients[0].notify == ("SUCCESS", "FAILURE")
    assert passed.recipients[0].orcpt == "rfc822;u@dest.test"


async def notices_delivered(system: System, *, sent: list[str]) -> None:
    """Wait until every notice the spool queued for the messages `sent` has been delivered.

    A notice is queued (published as `received`) before the outcome that calls for it is
    recorded; so once those outcomes are recorded and the spool has taken in every `received`
    event, every notice is in the queue, and each is waited for until delivered.
    """
    await system.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
    for entry in await system.entries():
        if entry.id not in sent:
            assert entry.sender == "", entry  # a notice, from the null sender
            await settle(system, entry.id, "delivered")


async def test_notify_never_sends_no_bounce_and_notify_success_reports_relay(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", refuse={"gone@dest.test": "550 5.1.1 Gone"})
    sender_mx = await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "sender.test", (10, "mx.sender.test", "127.0.0.3"))
    system = await relay()
    never = await send(system, "a@sender.test", ["gone@dest.test"], NOTIFY="NEVER")
    await settle(system, never, "failed")
    success = await send(system, "a@sender.test", ["u@dest.test"], NOTIFY="SUCCESS")
    await settle(system, success, "delivered")
    await notices_delivered(system, sent=[never, success])
    assert len(sender_mx.arrived) == 1  # the success notice, and no bounce
    notice = sender_mx.arrived[0].data
    assert b"Action: relayed" in notice
    assert b"Final-Recipient: rfc822; u@dest.test" in notice


async def test_a_delay_notice_is_sent_once_when_asked_for(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", rcpt_reply="451 4.3.0 Not now")
    sender_mx = await remote("127.0.0.3")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    mx(dns, "sender.test", (10, "mx.sender.test", "127.0.0.3"))
    system = await relay(delay_warning_after=0, retry_schedule=[0, 0.5])
    queue_id = await send(system, "a@sender.test", ["u@dest.test"], NOTIFY="DELAY,FAILURE")
    # Three attempts deferred, each past the delay-warning time: a notice is due after each,
    # and only the first may go out.
    await system.entry(queue_id)
    await eventually(
        lambda: system.records.get(queue_id),
        until=lambda entry: entry.attempts >= 3 and entry.state == "deferred",
        what="three deferred attempts",
    )
    await notices_delivered(system, sent=[queue_id])
    assert len(sender_mx.arrived) == 1
    assert b"Action: delayed" in sender_mx.arrived[0].data
    assert b"Will-Retry-Until: " in sender_mx.arrived[0].data
    entry = await system.records.get(queue_id)
    assert entry.recipients[0].notified == ("delay",)


async def test_a_frozen_queue_starts_no_attempt_and_loses_nothing(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    store = await system.bus.key_value(names.FLAGS_BUCKET)
    await controls.freeze(store)
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    await system.entry(queue_id)
    await system.scheduler_looked()  # it saw the message, due, and let it be
    assert (await system.records.get(queue_id)).state == "queued"
    assert server.sessions == 0
    await controls.unfreeze(store)
    assert not await flags.is_frozen(store)
    await settle(system, queue_id, "delivered")
    assert len(server.arrived) == 1


async def test_a_held_message_waits_until_released(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", rcpt_reply="451 4.3.0 Not yet")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(retry_schedule=[0, 0.5])
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    await settle(system, queue_id, "deferred")
    held = await controls.hold(system.records, queue_id)
    assert (held.state, held.held) == ("frozen", True)
    server.rcpt_reply = None
    sessions = server.sessions
    assert held.next_attempt is not None
    await eventually(
        lambda: datetime.now(UTC) > held.next_attempt,
        what="the held message's retry time to pass",
    )
    await system.scheduler_looked()  # it saw the message due, and held
    assert (await system.records.get(queue_id)).state == "frozen"
    assert (server.sessions, server.arrived) == (sessions, [])
    await controls.release(system.records, queue_id)
    await settle(system, queue_id, "delivered")


async def test_a_worker_killed_mid_delivery_leads_to_redelivery_recorded_once(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer, tmp_path: Path
) -> None:
    server = await remote("127.0.0.2", data_delay=3.0)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay(only=("ingress", "spool"), delivery_ack_wait=2.0)  # no delivery yet
    with fleet.running("delivery", system.settings, tmp_path) as worker:
        queue_id = await send(system, "a@sender.test", ["u@dest.test"])
        # The worker is a process of its own, which takes seconds to start on a busy machine.
        await eventually(
            lambda: worker.alive_or_fail() and server.data_received,
            what="the worker to be inside DATA",
            timeout=30,
        )
        assert (await system.records.get(queue_id)).state == "delivering"
        worker.kill()
    assert server.arrived == []  # the remote never finished that transaction
    server.data_delay = 0
    second = await relay(only=("delivery",), delivery_ack_wait=2.0)
    entry = await settle(system, queue_id, "delivered", timeout=30)
    assert len(server.arrived) == 1
    assert [h.attempt for h in entry.history] == [1]  # the one attempt, recorded once
    assert entry.attempts == 1
    await second.stop()


async def test_a_message_needing_smtputf8_fails_at_a_server_without_it(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", without=("SMTPUTF8",))
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    wire = await system.wire()
    await wire.command("EHLO client.test")
    await wire.command("MAIL FROM:<jörg@sender.test> SMTPUTF8")
    await wire.command("RCPT TO:<u@dest.test>")
    await wire.command("DATA")
    await wire.send("Subject: ü\r\n\r\nx\r\n.\r\n".encode())
    queue_id = (await wire.reply()).rsplit(" ", 1)[1]
    await wire.close()
    entry = await settle(system, queue_id, "failed")
    assert entry.last_reply == "553 5.6.7 mx.dest.test does not support SMTPUTF8"
    assert server.arrived == []


async def test_stopping_delivery_finishes_the_attempt_in_flight(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2", data_delay=1.5)
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    system = await relay()
    queue_id = await send(system, "a@sender.test", ["u@dest.test"])
    await eventually(lambda: server.data_received, what="the worker to be inside DATA")
    system.runtime.stop.set()
    await asyncio.wait_for(system.task, 30)
    assert len(server.arrived) == 1
    # The outcome was published and the job acked before the worker stopped (the spool may
    # have stopped before it took the outcome in): services started again record the one
    # attempt, and no second attempt reaches the remote.
    again = await relay()
    entry = await settle(again, queue_id, "delivered")
    assert [h.attempt for h in entry.history] == [1]
    await again.consumed(names.JOBS_STREAM, names.DELIVERY_JOBS_CONSUMER)
    assert len(server.arrived) == 1
