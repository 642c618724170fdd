"""`empathctl system status`: besides the health of each part, the figures an operator on call
looks at first: what came in and went out lately, the queue by state and its oldest message,
and which domains refuse mail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from empath.core import queue
from tests.control_client import TOKEN, empathctl
from tests.dns_server import DnsServer
from tests.mail import BODY, arrivals, mx
from tests.servers import free_port
from tests.system import StartSystem
from tests.waiting import eventually
from tests.wire import Wire


async def test_status_shows_rates_the_queue_and_the_failure_ratio_by_domain(
    start_system: StartSystem,
    dns: DnsServer,
    mx_port: int,
    remote: Callable[..., Any],
    tmp_path: Path,
) -> None:
    system = await start_system(
        only=("ingress", "spool", "delivery", "control"),
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
        control_audit_file=tmp_path / "audit.log",
        dns_nameservers=[f"127.0.0.1:{dns.port}"],
        delivery_port=mx_port,
        scheduler_interval=0.2,
        delivery_rate_per_domain=0,
    )
    taking = await remote("127.0.0.2")
    await remote("127.0.0.3", rcpt_reply="550 5.1.1 No such user")
    mx(dns, "ok.test", (10, "mx.ok.test", "127.0.0.2"))
    mx(dns, "bad.test", (10, "mx.bad.test", "127.0.0.3"))

    wire = await Wire.open(system.smtp_port)
    ids = []
    # A null sender: the refused recipient gets no bounce, which would be a third message.
    for rcpt in ("u@ok.test", "v@bad.test", "w@ok.test"):
        reply = await wire.transaction("", [rcpt], BODY)
        assert reply.startswith("250 2.0.0 Ok: queued as ")
        ids.append(reply.rsplit(" ", 1)[1])
    await wire.close()
    await arrivals(taking, 2, timeout=30)
    await eventually(
        lambda: system.entry(ids[1]),
        until=lambda entry: entry.state == queue.State.FAILED,
        what="the refused message to fail",
        timeout=30,
    )

    async def status() -> dict[str, Any]:
        shown = await asyncio.to_thread(empathctl, system, "-o", "json", "system", "status")
        assert shown.returncode == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    found = await eventually(
        status,
        until=lambda found: found["queue"]["by_state"]["delivered"] == 2,
        what="both delivered messages in the status",
        timeout=20,
    )
    activity = found["activity"]
    assert activity["minutes"] == 15
    assert activity["received"] == 3
    assert activity["received_per_minute"] == round(3 / 15, 2)
    assert (activity["delivered"], activity["failed"], activity["deferred"]) == (2, 1, 0)
    assert activity["delivered_per_minute"] == round(2 / 15, 2)
    assert activity["failure_ratio"] == round(1 / 3, 4)
    assert activity["by_domain"]["bad.test"] == {
        "delivered": 0,
        "deferred": 0,
        "failed": 1,
        "failure_ratio": 1.0,
    }
    assert activity["by_domain"]["ok.test"]["failure_ratio"] == 0.0
    assert found["queue"]["by_state"]["failed"] == 1
    assert found["queue"]["waiting"] == 0
    assert found["queue"]["oldest_seconds"] is None  # nothing waits
    assert found["services"]["delivery"] == 1

    # For people: the same figures, as YAML.
    shown = await asyncio.to_thread(empathctl, system, "system", "status")
    assert shown.returncode == 0, shown.stderr
    assert "failure_ratio: 1.0" in shown.stdout
    assert "bad.test:" in shown.stdout
    assert "delivered_per_minute: 0.13" in shown.stdout


async def test_status_shows_the_age_of_the_oldest_waiting_message(
    start_system: StartSystem, tmp_path: Path
) -> None:
    system = await start_system(
        only=("ingress", "spool", "control"),
        frozen=True,
        control_token=TOKEN,
        control_listen=f"127.0.0.1:{free_port()}",
        control_audit_file=tmp_path / "audit.log",
    )
    wire = await Wire.open(system.smtp_port)
    assert (await wire.transaction("a@one.test", ["u@example.com"], BODY)).startswith("250")
    await wire.close()
    await system.listed(1)
    shown = await asyncio.to_thread(empathctl, system, "-o", "json", "system", "status")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["queue"]["waiting"] == 1
    assert 0 <= found["queue"]["oldest_seconds"] < 60
    assert found["activity"]["received"] == 1
    assert found["activity"]["failure_ratio"] is None  # nothing attempted yet
