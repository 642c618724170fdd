"""Plugins with NATS users: ingress asks a NATS plugin and publishes session events, the spool
publishes delivery events, and a plugin process logged in as the `plugin` user answers and
follows its events; nobody needs a right the table does not give."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from empath.core import bus, names, natsauth, pluginevents, plugins, settings, up
from tests import servers
from tests import system as system_support
from tests.integration.plugins import cmodules
from tests.waiting import eventually
from tests.wire import Wire

BODY = b"Subject: secure\r\n\r\nhello\r\n"


@pytest.fixture
def plugin_nats(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A nats-server with every role's user and the `plugin` user."""
    credentials = tmp_path / "credentials"
    users = (*natsauth.ROLES, natsauth.PLUGIN, natsauth.ADMIN)
    config = natsauth.write_server_config(
        credentials / "nats-server.conf", natsauth.ensure_passwords(credentials, users)
    )
    port = servers.free_port()
    argv = up.nats_argv(host="127.0.0.1", port=port, store_dir=tmp_path / "js", config=config)
    with servers.running(argv, port, tmp_path / "nats-secure.log"):
        yield f"nats://127.0.0.1:{port}", credentials


async def test_plugins_run_on_their_own_nats_rights(
    plugin_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    tmp_path: Path,
) -> None:
    url, credentials = plugin_nats
    subject = f"{names.PLUGIN_REQUEST_PREFIX}.gate"
    config = make_settings(
        nats_url=url,
        plugins=[
            {"name": "gate", "hooks": ["rcpt"], "subject": subject, "failure_policy": "Fail"},
            {"name": "watcher", "hooks": ["connection_opened", "message_received"]},
        ],
    )
    only = ("ingress", "spool")
    seen: list[plugins.Event] = []
    stop = asyncio.Event()

    async def answer(msg: Msg) -> None:
        request = plugins.request_adapter.validate_json(msg.data)
        assert isinstance(request, plugins.RcptRequest)
        verdict: Any = (
            plugins.refuse(550, "not this one", enhanced="5.7.1")
            if request.recipient.startswith("no@")
            else plugins.Verdict(metadata={"gate": "passed"})
        )
        await msg.respond(verdict.model_dump_json().encode())

    async def note(event: plugins.Event) -> None:
        seen.append(event)

    async with system_support.as_roles_running(config, only, credentials) as system:
        plugin = await bus.connect(up.role_settings(config, natsauth.PLUGIN, credentials), name="p")
        following = asyncio.create_task(
            pluginevents.follow(plugin, plugin="watcher", handle=note, stop=stop)
        )
        try:
            await plugin.nc.subscribe(subject, cb=answer)
            wire = await Wire.open(system.smtp_port)
            await wire.command("EHLO client.test")
            await wire.command("MAIL FROM:<a@sender.test>")
            assert await wire.command("RCPT TO:<no@example.com>") == "550 5.7.1 not this one"
            assert (await wire.command("RCPT TO:<u@example.com>")).startswith("250")
            assert (await wire.command("DATA")).startswith("354")
            await wire.send(BODY + b".\r\n")
            reply = await wire.reply()
            await wire.close()
            queue_id = reply.rsplit(" ", 1)[1]
            entry = await system.entry(queue_id)
            assert entry.metadata == {"gate": "passed"}
            await eventually(
                lambda: {e.event for e in seen},
                until=lambda kinds: kinds == {"connection_opened", "message_received"},
                what="the watcher's events",
            )
            log = (tmp_path / "nats-secure.log").read_text()
            assert "Violation" not in log, log[-2000:]
        finally:
            stop.set()
            await following
            await plugin.close()


async def test_a_c_event_module_follows_its_events_on_ingress_rights(
    plugin_nats: tuple[str, Path],
    make_settings: Callable[..., settings.Settings],
    tmp_path: Path,
) -> None:
    url, credentials = plugin_nats
    told = tmp_path / "events.log"
    library = cmodules.build(cmodules.SOURCES / "events.c", tmp_path)
    config = make_settings(
        nats_url=url,
        plugins=[
            {
                "name": "c-events",
                "hooks": ["connection_opened", "message_received"],
                "library": library,
                "arguments": [str(told)],
            }
        ],
    )
    async with system_support.as_roles_running(config, ("ingress", "spool"), credentials) as system:
        wire = await Wire.open(system.smtp_port)
        reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY)
        await wire.close()
        queue_id = reply.rsplit(" ", 1)[1]
        await eventually(
            lambda: told.read_text().splitlines() if told.exists() else [],
            until=lambda lines: f"6 {queue_id} tag=-" in lines,
            what="the C module to be told the message was received",
        )
        log = (tmp_path / "nats-secure.log").read_text()
        assert "Violation" not in log, log[-2000:]
