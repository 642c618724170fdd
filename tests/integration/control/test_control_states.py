"""The control API and empathctl with delivery running: messages in every state."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.control_client import EMPATHCTL, TOKEN, call, empathctl, url
from tests.dns_server import DnsServer
from tests.mail import mx, send, settle
from tests.servers import free_port
from tests.terminal import terminal
from tests.waiting import eventually
from tests.wire import Wire


async def test_every_state_shows_up_and_retry_by_domain_works(
    relay: Callable[..., Any], remote: Callable[..., Any], dns: DnsServer
) -> None:
    await remote("127.0.0.2", refuse={"gone@ok.test": "550 5.1.1 Gone"})
    later = await remote("127.0.0.3", rcpt_reply="451 4.3.0 Later")
    mx(dns, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    mx(dns, "later.test", (10, "mx.later.test", "127.0.0.3"))
    system = await relay(
        only=("ingress", "spool", "delivery", "control"),
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
        retry_schedule=[0, 3600],
    )
    delivered = await send(system, "", ["u@ok.test"])
    failed = await send(system, "", ["gone@ok.test"])
    deferred = await send(system, "", ["u@later.test"])
    held = await send(system, "", ["v@later.test"])
    await settle(system, delivered, "delivered")
    await settle(system, failed, "failed")
    await settle(system, deferred, "deferred")
    await settle(system, held, "deferred")
    assert (await call(system, "POST", f"/api/v1/queue/{held}/hold")).status_code == 200
    await system.listed(4)
    for state, expected in (
        ("delivered", delivered),
        ("failed", failed),
        ("deferred", deferred),
        ("frozen", held),
    ):

        async def listed(state: str = state) -> list[str]:
            answer = await call(system, "GET", "/api/v1/queue", params={"state": state})
            return [item["id"] for item in answer.json()["items"]]

        await eventually(
            listed, until=lambda ids, expected=expected: ids == [expected], what=f"{state} list"
        )
    view = (await call(system, "GET", f"/api/v1/queue/{failed}")).json()["item"]
    assert view["history"][0]["results"][0]["reply"] == "550 5.1.1 Gone"
    assert view["recipients"][0]["status"] == "failed"

    later.rcpt_reply = None
    retried = await call(system, "POST", "/api/v1/queue/retry", json={"domain": "later.test"})
    assert retried.json() == {"retried": 1}  # the held one stays held
    await settle(system, deferred, "delivered")
    assert (await system.records.get(held)).state == "frozen"


async def test_empathctl_reads_flags_and_its_config_file_and_watches(
    relay: Callable[..., Any], tmp_path: Path
) -> None:
    system = await relay(
        only=("ingress", "spool", "control"),
        frozen=True,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
    )
    flags = await asyncio.to_thread(
        empathctl, None, "--url", url(system), "--token", TOKEN, "-o", "json", "system", "ping"
    )
    assert json.loads(flags.stdout)["pong"] is True
    config = tmp_path / "empathctl.yaml"
    config.write_text(f"url: {url(system)}\ntoken: {TOKEN}\n")
    from_file = await asyncio.to_thread(
        empathctl, None, "--config", str(config), "-o", "json", "dns", "list-overrides"
    )
    assert json.loads(from_file.stdout) == {"items": []}
    set_ = await asyncio.to_thread(
        empathctl, None, "--config", str(config), "dns", "set-override", "x.test", "127.0.0.9:25"
    )
    assert set_.returncode == 0, set_.stderr

    # `--watch` is for a terminal: run it on one, and read its frames as they are drawn.
    with terminal(
        EMPATHCTL, "--url", url(system), "--token", TOKEN, "queue", "stats", "--watch"
    ) as watch:
        await eventually(watch.screen, until=lambda text: "waiting, frozen" in text, what="a frame")
        assert "0 waiting, frozen: True" in watch.screen()
        wire = await Wire.open(system.smtp_port)
        await wire.transaction("a@one.test", ["u@example.com"], b"Subject: w\r\n\r\nx\r\n")
        await wire.close()
        await eventually(
            watch.screen,
            until=lambda text: "1 waiting, frozen: True" in text,
            what="a frame that counts the new message",
        )
        assert watch.process.poll() is None  # still watching
        watch.process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(watch.process.wait, 10) == 0
