"""NATS with a user per role: what each role may do on the bus, and what it may not.

Each forbidden action is one an attacker with that role's credentials (or none) would try:
forging events, calling the queue's admin API, reading the queue, rewriting MX overrides,
eavesdropping on received mail. Each is checked against a real nats-server configured as
`empath up` configures it, with the safe outcome asserted where a user would see it (the
stream, the bucket, the subscriber), beside the allowed action of the right role.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
import pytest
import trustme
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig, StreamSource

from empath.core import addresses, bus, errors, flags, names, natsauth, settings, up
from tests import servers
from tests import system as system_support
from tests.dns_server import DnsServer
from tests.mail import BODY, arrivals, mx, send, settle
from tests.waiting import eventually

SHORT = 1.0  # seconds a refused request waits for the answer that never comes


class Peer:
    """A raw NATS client logged in as one role, recording what the server refused."""

    def __init__(self, nc: Client, refusals: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=SHORT)
        self.refusals = refusals

    async def refused(self, subject: str) -> None:
        """Wait until the server has told this client it refused `subject`."""
        await eventually(
            lambda: [r for r in self.refusals if f'"{subject.lower()}"' in r.lower()],
            what=f"a permissions violation for {subject}",
        )


@pytest.fixture
async def peer(secure_nats: tuple[str, Path]) -> AsyncIterator[Callable[[str], Awaitable[Peer]]]:
    url, credentials = secure_nats
    opened: list[Client] = []

    async def connect(role: str) -> Peer:
        refusals: list[str] = []

        async def error(e: Exception) -> None:
            refusals.append(str(e))

        nc = await nats.connect(
            url,
            user=role,
            password=natsauth.password_file(credentials, role).read_text().strip(),
            inbox_prefix=natsauth.inbox_prefix(role),
            error_cb=error,
            allow_reconnect=False,
        )
        opened.append(nc)
        return Peer(nc, refusals)

    # The streams and buckets exist, as they do once the services have started.
    admin = await connect(natsauth.ADMIN)
    await bus.ensure_streams(admin.js)
    for bucket in (
        names.QUEUE_BUCKET,
        names.FLAGS_BUCKET,
        names.OVERRIDES_BUCKET,
        names.DNS_BUCKET,
        names.SERVICES_BUCKET,
    ):
        await admin.js.create_key_value(bucket=bucket)
    yield connect
    for nc in opened:
        await nc.close()


async def stored(admin: Peer, stream: str) -> int:
    return int((await admin.js.stream_info(stream)).state.messages)


async def test_an_anonymous_client_or_a_wrong_password_is_refused(
    secure_nats: tuple[str, Path], peer: Callable[[str], Awaitable[Peer]], tmp_path: Path
) -> None:
    # (`peer` has made the streams, as `empath up` does before the services start.)
    url, credentials = secure_nats
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(url, allow_reconnect=False)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    config = settings.Settings(nats_url=url, nats_user="ingress", nats_password_file=wrong)
    with pytest.raises(errors.ConfigurationError, match="EMPATH_NATS_PASSWORD"):
        await bus.connect(config, name="ingress")
    right = config.model_copy(
        update={"nats_password_file": natsauth.password_file(credentials, "ingress")}
    )
    connected = await bus.connect(right, name="ingress")
    assert connected.nc.is_connected
    await connected.close()


async def test_a_service_connects_over_tls_verifying_the_server_with_the_given_ca(
    secure_nats: tuple[str, Path], tmp_path: Path
) -> None:
    _, credentials = secure_nats
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    port = servers.free_port()
    argv = up.nats_argv(
        host="127.0.0.1",
        port=port,
        store_dir=tmp_path / "tls-js",
        config=credentials / "nats-server.conf",
    )
    argv += ["--tls", "--tlscert", str(cert_file), "--tlskey", str(key_file)]
    with servers.running(argv, port, tmp_path / "nats-tls.log"):
        config = settings.Settings(
            nats_url=f"tls://127.0.0.1:{port}",
            nats_tls_ca=ca_file,
            nats_user="spool",
            nats_password_file=natsauth.password_file(credentials, "spool"),
        )
        # Without the CA the server's certificate is not trusted: no connection.
        with pytest.raises(ssl.SSLCertVerificationError):
            await nats.connect(
                f"tls://127.0.0.1:{port}",
                user="spool",
                password=config.nats_secret() or "",
                allow_reconnect=False,
                connect_timeout=5,
            )
        connected = await bus.connect(config, name="spool")
        try:
            ack = await connected.js.publish(names.RECEIVED_SUBJECT, b"{}")
            assert ack.stream == names.RECEIVED_STREAM.name
        finally:
            await connected.close()


FORGED_EVENTS = [
    ("delivery", names.RECEIVED_SUBJECT, names.RECEIVED_STREAM.name),
    ("control", names.RECEIVED_SUBJECT, names.RECEIVED_STREAM.name),
    ("ingress", names.ATTEMPTED_SUBJECT, names.ATTEMPTED_STREAM.name),
    ("ingress", names.JOBS_SUBJECT, names.JOBS_STREAM.name),
    ("control", names.JOBS_SUBJECT, names.JOBS_STREAM.name),
]


@pytest.mark.parametrize(("role", "subject", "stream"), FORGED_EVENTS)
async def test_a_role_cannot_publish_another_roles_events(
    peer: Callable[[str], Awaitable[Peer]], role: str, subject: str, stream: str
) -> None:
    forger, admin = await peer(role), await peer(natsauth.ADMIN)
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await forger.js.publish(subject, b'{"forged": true}')
    await forger.refused(subject)
    assert await stored(admin, stream) == 0


ALLOWED_EVENTS = [
    ("ingress", names.RECEIVED_SUBJECT, names.RECEIVED_STREAM.name),
    ("spool", names.RECEIVED_SUBJECT, names.RECEIVED_STREAM.name),
    ("spool", names.JOBS_SUBJECT, names.JOBS_STREAM.name),
    ("delivery", names.ATTEMPTED_SUBJECT, names.ATTEMPTED_STREAM.name),
]


@pytest.mark.parametrize(("role", "subject", "stream"), ALLOWED_EVENTS)
async def test_a_role_publishes_its_own_events(
    peer: Callable[[str], Awaitable[Peer]], role: str, subject: str, stream: str
) -> None:
    publisher, admin = await peer(role), await peer(natsauth.ADMIN)
    ack = await publisher.js.publish(subject, b"{}")
    assert ack.stream == stream
    assert await stored(admin, stream) == 1


async def test_only_control_calls_the_queue_api_and_only_spool_answers(
    peer: Callable[[str], Awaitable[Peer]],
) -> None:
    spool, control, ingress = await peer("spool"), await peer("control"), await peer("ingress")
    calls: list[str] = []

    async def answer(msg: Msg) -> None:
        calls.append(msg.subject)
        await msg.respond(b'{"ok": true}')

    await spool.nc.subscribe(natsauth.QUEUE_API, queue=names.QUERY_QUEUE_GROUP, cb=answer)
    await spool.nc.flush()
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await ingress.nc.request(names.QUERY_DELETE_SUBJECT, b'{"ids": ["x"]}', timeout=SHORT)
    await ingress.refused(names.QUERY_DELETE_SUBJECT)
    reply = await control.nc.request(names.QUERY_COUNTS_SUBJECT, b"{}", timeout=5)
    assert json.loads(reply.data) == {"ok": True}
    assert calls == [names.QUERY_COUNTS_SUBJECT]
    # Nobody but the spool may answer: a role listening on the API is refused.
    await control.nc.subscribe(names.QUERY_DELETE_SUBJECT, cb=answer)
    await control.refused(names.QUERY_DELETE_SUBJECT)


async def test_only_the_spool_writes_the_queue_bucket_and_delivery_only_gets_a_record(
    peer: Callable[[str], Awaitable[Peer]],
) -> None:
    spool, ingress, delivery = await peer("spool"), await peer("ingress"), await peer("delivery")
    kv = await spool.js.key_value(names.QUEUE_BUCKET)
    await kv.put(names.queue_key("m1"), b'{"envelope": "secret"}')
    assert (await kv.get(names.queue_key("m1"))).value == b'{"envelope": "secret"}'
    key = f"$KV.{names.QUEUE_BUCKET}.{names.queue_key('m1')}"
    with pytest.raises(nats.errors.TimeoutError):
        await ingress.js.key_value(names.QUEUE_BUCKET)
    with pytest.raises(nats.errors.TimeoutError):
        await ingress.js.get_last_msg(f"KV_{names.QUEUE_BUCKET}", key)
    # Delivery checks each job against its record: it gets one by key, and nothing more.
    read = await delivery.js.key_value(names.QUEUE_BUCKET)
    assert (await read.get(names.queue_key("m1"))).value == b'{"envelope": "secret"}'
    with pytest.raises(nats.errors.TimeoutError):
        await read.keys()  # no listing the queue (a consumer on the bucket)
    for role in (ingress, delivery):
        with pytest.raises(nats.errors.TimeoutError):
            await role.js.publish(key, b"{}")
    assert (await kv.get(names.queue_key("m1"))).value == b'{"envelope": "secret"}'


async def test_delivery_reads_mx_overrides_but_only_control_writes_them(
    peer: Callable[[str], Awaitable[Peer]],
) -> None:
    control, delivery = await peer("control"), await peer("delivery")
    written = await control.js.key_value(names.OVERRIDES_BUCKET)
    await written.put("dest.test", b"127.0.0.2:25")
    read = await delivery.js.key_value(names.OVERRIDES_BUCKET)
    with pytest.raises(nats.errors.TimeoutError):
        await read.put("dest.test", b"evil.test:25")
    await delivery.refused(f"$KV.{names.OVERRIDES_BUCKET}.dest.test")
    assert (await read.get("dest.test")).value == b"127.0.0.2:25"


async def test_control_cannot_listen_to_received_mail(
    peer: Callable[[str], Awaitable[Peer]],
) -> None:
    control, admin = await peer("control"), await peer(natsauth.ADMIN)
    seen: list[str] = []

    async def note(msg: Msg) -> None:
        seen.append(msg.subject)

    await control.nc.subscribe(names.RECEIVED_SUBJECT, cb=note)
    await control.refused(names.RECEIVED_SUBJECT)
    # A marker on the control's own inbox, sent after the event by the same publisher,
    # arrives after the event would have.
    marker = f"{natsauth.inbox_prefix('control')}.marker"
    await control.nc.subscribe(marker, cb=note)
    await control.nc.flush()
    await admin.js.publish(names.RECEIVED_SUBJECT, b"{}")
    await admin.nc.publish(marker, b"")
    await eventually(lambda: list(seen), until=lambda s: marker in s, what="the marker")
    assert seen == [marker]
    # Nor read the stream through a consumer of its own.
    with pytest.raises(nats.errors.TimeoutError):
        await control.js.pull_subscribe(names.RECEIVED_SUBJECT, durable="spy")


async def test_delivery_consumes_jobs_but_not_received_mail(
    peer: Callable[[str], Awaitable[Peer]],
) -> None:
    spool, delivery = await peer("spool"), await peer("delivery")
    await spool.js.publish(names.JOBS_SUBJECT, b'{"job": 1}')
    jobs = await delivery.js.pull_subscribe(
        names.JOBS_SUBJECT, durable=names.DELIVERY_JOBS_CONSUMER, stream=names.JOBS_STREAM.name
    )
    [job] = await jobs.fetch(1, timeout=5)
    assert job.data == b'{"job": 1}'
    await job.ack_sync(timeout=5)
    with pytest.raises(nats.errors.TimeoutError):
        await delivery.js.pull_subscribe(
            names.RECEIVED_SUBJECT,
            durable=names.SPOOL_RECEIVED_CONSUMER,
            stream=names.RECEIVED_STREAM.name,
        )


async def test_no_role_but_the_spool_creates_or_changes_a_stream(
    peer: Callable[[str], Awaitable[Peer]],
) -> None:
    ingress, delivery, admin = await peer("ingress"), await peer("delivery"), await peer("admin")
    # A stream of one's own that copies received mail would let one read it there.
    spy = StreamConfig(name="SPY", sources=[StreamSource(name=names.RECEIVED_STREAM.name)])
    with pytest.raises(nats.errors.TimeoutError):
        await ingress.js.add_stream(spy)
    await ingress.refused("$JS.API.STREAM.CREATE.SPY")
    widened = StreamConfig(
        name=names.ATTEMPTED_STREAM.name, subjects=[names.ATTEMPTED_SUBJECT, "empath.spy"]
    )
    with pytest.raises(nats.errors.TimeoutError):
        await delivery.js.update_stream(widened)
    streams = {info.config.name for info in await admin.js.streams_info()}
    assert "SPY" not in streams
    info = await admin.js.stream_info(names.ATTEMPTED_STREAM.name)
    assert info.config.subjects == [names.ATTEMPTED_SUBJECT]


async def test_a_message_is_relayed_with_each_service_on_its_own_credentials(
    secure_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    relay_settings: dict[str, Any],
    dns: DnsServer,
    remote: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, credentials = secure_nats
    server = await remote("127.0.0.2", hold=asyncio.Event())
    caplog.set_level(logging.INFO, logger="empath.core.bodies")
    mx(dns, "dest.test", (10, "mx1.dest.test", "127.0.0.2"))
    config = make_settings(
        **relay_settings,
        nats_url=url,
        control_token="test-token",
        control_listen=f"127.0.0.1:{servers.free_port()}",
    )
    only = ("ingress", "spool", "delivery", "control")
    host, port = addresses.parse_hostport(config.control_listen)
    async with system_support.as_roles_running(config, only, credentials) as system:
        # Ingress leaves small bodies out of the bucket once it has seen the spool's heartbeat.
        await eventually(
            lambda: [m for m in caplog.messages if m.startswith("every spool reads bodies")],
            what="ingress to leave small bodies in their events",
        )
        queue_id = await send(system, "a@sender.test", ["u@dest.test"])
        await eventually(lambda: server.in_data, until=lambda n: n == 1, what="delivery")
        # A small message out on its first attempt is in no bucket: control reads its body
        # from the `received` event that carries it, as the control user.
        async with httpx.AsyncClient(headers={"Authorization": "Bearer test-token"}) as http:
            shown = await http.get(
                f"http://{host}:{port}/api/v1/queue/{queue_id}", params={"body": "true"}
            )
        assert shown.status_code == 200, shown.text
        assert shown.json()["body"].endswith(BODY.decode())
        assert await system.bodies() == []  # it was read from the event, as the control user
        server.hold.set()
        await settle(system, queue_id, "delivered")
        await arrivals(server, 1)
        assert server.arrived[0].recipients == ["u@dest.test"]
        # The control API reaches the spool through NATS as the control user.
        async with httpx.AsyncClient(headers={"Authorization": "Bearer test-token"}) as http:
            answer = await http.get(f"http://{host}:{port}/api/v1/queue/{queue_id}")
        assert answer.status_code == 200, answer.text
        assert queue_id in answer.text
        # No service needed anything its role is not allowed.
        log = (credentials.parent / "nats-secure.log").read_text()
        assert "Violation" not in log, log[-2000:]


@pytest.mark.parametrize("role", ["ingress", "delivery", "control"])
async def test_no_role_but_the_spool_can_freeze_the_queue_through_its_flags(
    peer: Callable[[str], Awaitable[Peer]], role: str
) -> None:
    """Freezing the queue stops all delivery: only the spool (asked by control's API, which
    audits the call) may write the flag."""
    attacker, admin = await peer(role), await peer(natsauth.ADMIN)
    subject = f"$KV.{names.FLAGS_BUCKET}.{names.FROZEN_FLAG}"
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await attacker.js.publish(subject, b"1")
    await attacker.refused(subject)
    kv = await admin.js.key_value(names.FLAGS_BUCKET)
    assert not await flags.is_frozen(kv)
    await flags.set_frozen(kv, True)  # the flag itself works: the refusal was the permission
    assert await flags.is_frozen(kv)


@pytest.mark.parametrize("role", ["ingress", "delivery", "spool"])
async def test_no_role_but_control_can_send_a_domains_mail_elsewhere(
    peer: Callable[[str], Awaitable[Peer]], role: str
) -> None:
    """An MX override in the bucket sends a domain's mail to the host it names: only control
    writes them (and audits who asked)."""
    attacker, admin = await peer(role), await peer(natsauth.ADMIN)
    subject = f"$KV.{names.OVERRIDES_BUCKET}.dest.test"
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await attacker.js.publish(subject, b"evil.test:25")
    await attacker.refused(subject)
    kv = await admin.js.key_value(names.OVERRIDES_BUCKET)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("dest.test")
