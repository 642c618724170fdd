"""Defence in depth past NATS permissions: what a stolen credential still cannot do.

With ingress's NATS password an attacker may publish `received` events, but the spool queues
only those signed with a key it trusts: a forged one (no signature, a key of the attacker's
own, a signature of other bytes) is not queued, and is counted. With the spool's (or the
admin's) password one may publish delivery jobs, but delivery sends only a job that matches
the queue record it names: one naming another message's body for a recipient of its own
sends nothing, and is counted. Each runs against real services, each on its own NATS user.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from empath.core import errors, events, ids, names, natsauth, settings, signing, store, up
from tests import system as system_support
from tests.counters import scraped
from tests.dns_server import DnsServer
from tests.mail import arrivals, mx, send, settle
from tests.waiting import eventually


async def connect_as(url: str, credentials: Path, role: str) -> nats.NATS:
    return await nats.connect(
        url,
        user=role,
        password=natsauth.password_file(credentials, role).read_text().strip(),
        inbox_prefix=natsauth.inbox_prefix(role),
        allow_reconnect=False,
    )


def received(queue_id: str, body_key: str, recipient: str, *, at: datetime | None = None) -> bytes:
    event = events.Received(
        id=queue_id,
        body_key=body_key,
        size=100,
        received_at=at or datetime.now(UTC),
        envelope=events.Envelope(
            sender="ceo@victim.test", recipients=(events.Recipient(address=recipient),)
        ),
        client=events.Client(ip="127.0.0.1", helo="forger.test"),
    )
    return event.model_dump_json().encode()


async def test_a_received_event_not_signed_by_a_trusted_key_is_not_queued(
    secure_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    event_keys: dict[str, Path],
) -> None:
    url, credentials = secure_nats
    config = make_settings(nats_url=url)
    forger = await connect_as(url, credentials, "ingress")
    js = forger.jetstream(timeout=5)
    stranger = signing.Signer(ed25519.Ed25519PrivateKey.generate())
    trusted = signing.load_private(event_keys[signing.SPOOL_KEY])
    refused = {r: scraped("empath_spool_received_refused_total", reason=r) for r in REASONS}
    async with system_support.as_roles_running(config, ("ingress", "spool"), credentials) as sut:
        objects = sut.objects
        forged: dict[str, str] = {}
        try:
            for reason in REASONS:
                queue_id = ids.new_id()
                key = store.body_key(queue_id, datetime.now(UTC))
                await objects.put(key, b"Subject: wire the money\r\n\r\nnow\r\n")
                data = received(queue_id, key, "mule@elsewhere.test")
                headers = {
                    "missing": {},
                    "malformed": {signing.HEADER: "hmac-sha256 whatever"},
                    "unknown-key": {signing.HEADER: stranger.sign(names.RECEIVED_SUBJECT, data)},
                    # A trusted key's signature, of another event.
                    "bad": {signing.HEADER: trusted.sign(names.RECEIVED_SUBJECT, data + b" ")},
                }[reason]
                ack = await js.publish(
                    names.RECEIVED_SUBJECT, data, headers={**headers, "Nats-Msg-Id": queue_id}
                )
                assert ack.stream == names.RECEIVED_STREAM.name  # NATS let ingress publish it
                forged[reason] = queue_id
            # Real mail still goes through, signed by ingress.
            queue_id = await send(sut, "a@sender.test", ["u@example.com"])
            assert (await sut.entry(queue_id)).body_key
            await sut.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
            for reason, forged_id in forged.items():
                with pytest.raises(errors.NotFound):
                    await sut.records.get(forged_id)
                assert (
                    scraped("empath_spool_received_refused_total", reason=reason)
                    == refused[reason] + 1
                ), reason
            assert [e.id for e in await sut.entries()] == [queue_id]
        finally:
            await forger.close()


REASONS = ("missing", "malformed", "unknown-key", "bad")


async def test_a_signed_received_event_replayed_later_is_not_queued(
    secure_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    event_keys: dict[str, Path],
) -> None:
    """An event captured with its signature and published again an hour later (NATS's
    duplicate window long over, its record gone) is refused; a fresh one goes through."""
    url, credentials = secure_nats
    config = make_settings(nats_url=url)
    replayer = await connect_as(url, credentials, "ingress")
    js = replayer.jetstream(timeout=5)
    trusted = signing.load_private(event_keys[signing.SPOOL_KEY])
    stale = scraped("empath_spool_received_refused_total", reason="stale")
    async with system_support.as_roles_running(config, ("ingress", "spool"), credentials) as sut:
        try:
            sent = {}
            for age in (timedelta(hours=1), timedelta(seconds=5)):
                queue_id = ids.new_id()
                key = store.body_key(queue_id, datetime.now(UTC))
                await sut.objects.put(key, b"Subject: again\r\n\r\nand again\r\n")
                data = received(queue_id, key, "u@example.com", at=datetime.now(UTC) - age)
                signature = trusted.sign(names.RECEIVED_SUBJECT, data)
                await js.publish(
                    names.RECEIVED_SUBJECT,
                    data,
                    headers={signing.HEADER: signature, "Nats-Msg-Id": queue_id},
                )
                sent[age] = queue_id
            await sut.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
            with pytest.raises(errors.NotFound):
                await sut.records.get(sent[timedelta(hours=1)])
            assert (await sut.records.get(sent[timedelta(seconds=5)])).sender == "ceo@victim.test"
            assert scraped("empath_spool_received_refused_total", reason="stale") == stale + 1
        finally:
            await replayer.close()


def received_v2(queue_id: str, body_key: str) -> bytes:
    """A `received` as an ingress of the version before signing published it."""
    event = events.ReceivedV2(
        id=queue_id,
        body_key=body_key,
        size=40,
        received_at=datetime.now(UTC),
        envelope=events.Envelope(
            sender="old@sender.test", recipients=(events.Recipient(address="u@example.com"),)
        ),
        client=events.Client(ip="127.0.0.1", helo="old-ingress.test"),
    )
    return event.model_dump_json().encode()


class OldIngress:
    """An ingress pod of the version before signing: it stores the body, publishes unsigned."""

    def __init__(self, js: Any, objects: store.ObjectStore) -> None:
        self.js, self.objects = js, objects

    async def accept(self, headers: dict[str, str] | None = None) -> str:
        queue_id = ids.new_id()
        key = store.body_key(queue_id, datetime.now(UTC))
        await self.objects.put(key, b"Subject: accepted\r\n\r\nbefore the upgrade\r\n")
        await self.js.publish(
            names.RECEIVED_SUBJECT,
            received_v2(queue_id, key),
            headers={**(headers or {}), "Nats-Msg-Id": queue_id},
        )
        return queue_id


@contextlib.asynccontextmanager
async def old_ingress(
    url: str, credentials: Path, config: settings.Settings
) -> AsyncIterator[OldIngress]:
    """The streams and the bucket as the installation had them, and an old ingress pod."""
    await up.prepare(up.role_settings(config, natsauth.ADMIN, credentials))
    connection = await connect_as(url, credentials, "ingress")
    objects = store.ObjectStore(config)
    try:
        await objects.ensure_bucket()
        yield OldIngress(connection.jetstream(timeout=5), objects)
    finally:
        await connection.close()
        objects.close()


async def test_an_upgrade_to_signed_events_queues_what_old_ingress_pods_accepted(
    secure_nats: tuple[str, Path], make_settings: Callable[..., settings.Settings]
) -> None:
    """A rolling upgrade: messages an old ingress answered 250 for, before the new spool
    started and while it runs, are queued; a forged signature still is not; the window is the
    installation's, kept across spool restarts."""
    url, credentials = secure_nats
    config = make_settings(nats_url=url, event_unsigned_grace=600)
    refused = scraped("empath_spool_received_refused_total", reason="malformed")
    async with old_ingress(url, credentials, config) as old:
        before = await old.accept()
        started = datetime.now(UTC)
        async with system_support.as_roles_running(
            config, ("ingress", "spool"), credentials
        ) as sut:
            during = await old.accept()
            forged = await old.accept({signing.HEADER: "ed25519 nonsense"})
            signed = await send(sut, "a@sender.test", ["u@example.com"])
            await sut.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
            for queue_id in (before, during):
                entry = await sut.records.get(queue_id)
                assert entry.sender == "old@sender.test"
            assert (await sut.records.get(signed)).sender == "a@sender.test"
            with pytest.raises(errors.NotFound):
                await sut.records.get(forged)
            assert scraped("empath_spool_received_refused_total", reason="malformed") == refused + 1
            flags = await sut.bus.key_value(names.FLAGS_BUCKET)
            written = (await flags.get(names.UNSIGNED_UNTIL_FLAG)).value or b""
            until = datetime.fromisoformat(written.decode())
            assert 599 <= (until - started).total_seconds() <= 660
        # A spool started again, even with another grace, keeps the installation's window.
        again = config.model_copy(update={"event_unsigned_grace": 0})
        async with system_support.as_roles_running(again, ("spool",), credentials) as sut:
            late = await old.accept()
            assert (await sut.entry(late)).sender == "old@sender.test"


@pytest.mark.parametrize("history", ["new installation", "window closed"])
async def test_unsigned_events_are_refused_outside_an_upgrade_window(
    history: str, secure_nats: tuple[str, Path], make_settings: Callable[..., settings.Settings]
) -> None:
    url, credentials = secure_nats
    config = make_settings(nats_url=url, event_unsigned_grace=600)
    refused = scraped("empath_spool_received_refused_total", reason="missing")
    async with old_ingress(url, credentials, config) as old:
        if history == "window closed":
            # An upgrade an hour ago: its window is over.
            admin = await connect_as(url, credentials, natsauth.ADMIN)
            flags = await admin.jetstream().key_value(names.FLAGS_BUCKET)
            closed = datetime.now(UTC) - timedelta(hours=1)
            await flags.create(names.UNSIGNED_UNTIL_FLAG, closed.isoformat().encode())
            await admin.close()
        async with system_support.as_roles_running(config, ("spool",), credentials) as sut:
            unsigned = await old.accept()
            await sut.consumed(names.RECEIVED_STREAM, names.SPOOL_RECEIVED_CONSUMER)
            with pytest.raises(errors.NotFound):
                await sut.records.get(unsigned)
            assert scraped("empath_spool_received_refused_total", reason="missing") == refused + 1


async def test_a_forged_job_naming_another_messages_body_sends_nothing(
    secure_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    relay_settings: dict[str, Any],
    dns: DnsServer,
    remote: Callable[..., Any],
) -> None:
    url, credentials = secure_nats
    server = await remote("127.0.0.2", refuse={"later@dest.test": "451 4.3.0 try later"})
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    config = make_settings(**{**relay_settings, "nats_url": url, "retry_schedule": [0, 3600]})
    only = ("ingress", "spool", "delivery")
    refused = scraped("empath_delivery_jobs_refused_total")
    async with system_support.as_roles_running(config, only, credentials) as sut:
        # Checked jobs are delivered as before.
        delivered = await send(sut, "a@sender.test", ["u@dest.test"])
        await settle(sut, delivered, "delivered")
        await arrivals(server, 1)
        # A message waiting for its next attempt, its body in the bucket.
        waiting = await settle(
            sut, await send(sut, "a@sender.test", ["later@dest.test"]), "deferred"
        )
        admin = await connect_as(url, credentials, natsauth.ADMIN)
        try:
            js = admin.jetstream(timeout=5)
            envelope = events.Envelope(
                sender="a@sender.test", recipients=(events.Recipient(address="thief@dest.test"),)
            )
            forged = [
                # Its own message, its attempt, a recipient of the forger's.
                events.DeliveryJob(
                    id=waiting.id,
                    attempt=waiting.attempts,
                    body_key=waiting.body_key,
                    size=waiting.size,
                    envelope=envelope,
                ),
                # The next attempt, as the spool would number it, before the spool did.
                events.DeliveryJob(
                    id=waiting.id,
                    attempt=waiting.attempts + 1,
                    body_key=waiting.body_key,
                    size=waiting.size,
                    envelope=waiting.envelope(),
                ),
                # A message that does not exist, with the body of one that does.
                events.DeliveryJob(
                    id=ids.new_id(),
                    attempt=1,
                    body_key=waiting.body_key,
                    size=waiting.size,
                    envelope=envelope,
                ),
            ]
            for n, job in enumerate(forged):
                await js.publish(
                    names.JOBS_SUBJECT,
                    job.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": f"forged-{n}"},
                )
            await eventually(
                lambda: scraped("empath_delivery_jobs_refused_total"),
                until=lambda n: n == refused + len(forged),
                what="delivery to refuse the forged jobs",
            )
        finally:
            await admin.close()
        assert [a.recipients for a in server.arrived] == [["u@dest.test"]]
        after = await sut.records.get(waiting.id)
        assert (after.state, after.attempts) == ("deferred", waiting.attempts)
        assert await sut.objects.exists(waiting.body_key)
    log = (credentials.parent / "nats-secure.log").read_text()
    assert "Violation" not in log, log[-2000:]
