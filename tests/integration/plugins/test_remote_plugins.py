"""Plugins in other processes: over HTTP (the reference plugin of `examples/`, a real aiohttp
server on loopback, plain and HTTPS) and over NATS request/reply."""

from __future__ import annotations

import importlib.util
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trustme
from aiohttp import web
from nats.aio.msg import Msg

from empath.core import names, plugins
from tests.dns_server import DnsServer
from tests.mail import arrivals, mx, send, settle
from tests.servers import free_port
from tests.system import StartSystem

REPO = Path(__file__).resolve().parents[3]
BODY = b"Subject: plugins\r\n\r\nhello\r\n"


def example() -> ModuleType:
    """examples/http_plugin.py, as a user would copy it."""
    spec = importlib.util.spec_from_file_location("http_plugin", REPO / "examples/http_plugin.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def serve_example() -> AsyncIterator[Callable[..., Any]]:
    """Start the reference plugin: `await serve_example(secret=..., tls=...)` -> its URL."""
    runners: list[web.AppRunner] = []

    async def start(*, secret: str | None = None, tls: ssl.SSLContext | None = None) -> str:
        app = example().make_app(blocked={"spam.test"}, secret=secret)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}/hook"

    yield start
    for runner in runners:
        await runner.cleanup()


def http_plugin(url: str, **options: Any) -> dict[str, Any]:
    return {"name": "example", "hooks": ["mail", "rcpt", "data"], "url": url, **options}


async def test_an_http_plugin_refuses_at_mail_and_tags_what_it_accepts(
    start_system: StartSystem, serve_example: Callable[..., Any]
) -> None:
    url = await serve_example()
    system = await start_system(frozen=True, plugins=[http_plugin(url)])
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (
        await wire.command("MAIL FROM:<a@spam.test>") == "550 5.7.1 Mail from spam.test is refused"
    )
    reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY, ehlo=False)
    await wire.close()
    queue_id = reply.rsplit(" ", 1)[1]
    entry = await system.entry(queue_id)
    assert entry.metadata == {"example.checked": "u@example.com"}
    body = await system.objects.get(entry.body_key)
    assert f"\r\nX-Example-Checked: yes; id={queue_id}\r\nSubject: plugins\r\n".encode() in body


async def test_an_https_plugin_with_a_ca_bundle_and_a_shared_secret(
    start_system: StartSystem, serve_example: Callable[..., Any], tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "wrong").write_text("guess\n")
    url = await serve_example(secret="s3cret", tls=server_context)
    system = await start_system(
        frozen=True,
        plugins=[
            http_plugin(url, ca_file=tmp_path / "ca.pem", secret_file=tmp_path / "secret"),
            {
                **http_plugin(url, ca_file=tmp_path / "ca.pem", secret_file=tmp_path / "wrong"),
                "name": "wrong-secret",
                "hooks": ["rcpt"],
                "failure_policy": "Fail",
            },
        ],
    )
    wire = await system.wire()
    await wire.command("EHLO client.test")
    assert (
        await wire.command("MAIL FROM:<a@spam.test>") == "550 5.7.1 Mail from spam.test is refused"
    )
    assert (await wire.command("MAIL FROM:<a@sender.test>")).startswith("250")
    # The plugin with the wrong secret gets 403: a failure, and its policy is Fail.
    assert await wire.command("RCPT TO:<u@example.com>") == (
        "451 4.7.1 Temporary policy failure, try again later"
    )
    await wire.close()


async def test_a_nats_plugin_adds_a_header_at_data_that_reaches_the_remote_mx(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    server = await remote("127.0.0.2")
    mx(dns, "dest.test", (10, "mx.dest.test", "127.0.0.2"))
    subject = f"{names.PLUGIN_REQUEST_PREFIX}.stamp"
    system = await relay(
        # A generous timeout: on a loaded machine the default one may pass, and the message
        # then goes on without the header (failure policy Ignore), which is not this test's point.
        plugins=[
            {"name": "stamp", "hooks": ["data"], "subject": subject, "body_limit": 8, "timeout": 15}
        ]
    )
    seen: list[plugins.DataRequest] = []

    async def answer(msg: Msg) -> None:
        request = plugins.request_adapter.validate_json(msg.data)
        assert isinstance(request, plugins.DataRequest)
        seen.append(request)
        verdict = plugins.Verdict(
            headers=(plugins.Header(name="Authentication-Results", value="mx.test; none"),),
            metadata={"stamped": "yes"},
        )
        await msg.respond(verdict.model_dump_json().encode())

    sub = await system.bus.nc.subscribe(subject, cb=answer)
    try:
        queue_id = await send(system, "a@sender.test", ["u@dest.test"])
        entry = await settle(system, queue_id, "delivered")
        await arrivals(server, 1)
    finally:
        await sub.unsubscribe()
    arrived = server.arrived[0].data
    received, _, rest = arrived.partition(b"\r\nAuthentication-Results: mx.test; none\r\n")
    assert received.startswith(b"Received: from client.test")
    assert rest.startswith(b"Subject:")
    assert entry.metadata == {"stamped": "yes"}
    (request,) = seen
    assert (request.id, request.sender, request.recipients) == (
        queue_id,
        "a@sender.test",
        ("u@dest.test",),
    )
    assert ("Subject", "hello") in request.headers
    assert (request.body(), request.body_truncated) == (b"Subject:", True)
    assert json.loads(request.model_dump_json())["session"]["helo"] == "client.test"
