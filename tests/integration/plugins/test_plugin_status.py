"""How each plugin's calls went, as the services publish it: ingress counts every call and
keeps the last success and failure, publishes them with its heartbeat, and the control API
(`GET /api/v1/plugins`, `empathctl plugins`) says per plugin whether it is ready or failing
and why. Nobody calls a plugin to find out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.control_client import call, empathctl, with_control
from tests.integration.plugins import samples
from tests.servers import continuing_plugin, free_port
from tests.system import StartSystem, System
from tests.waiting import eventually
from tests.wire import Wire

BODY = b"Subject: status\r\n\r\nhello\r\n"
SAMPLES = samples.__name__


async def shown(system: System) -> dict[str, dict[str, Any]]:
    answer = await call(system, "GET", "/api/v1/plugins")
    assert answer.status_code == 200, answer.text
    return {plugin["name"]: plugin for plugin in answer.json()["plugins"]}


async def test_each_plugins_last_calls_are_published_and_shown(
    start_system: StartSystem,
) -> None:
    samples.CALLS.clear()
    port = free_port()
    system = await start_system(
        **with_control("ingress", "spool"),
        frozen=True,
        plugins=[
            {"name": "policy", "hooks": ["rcpt"], "module": f"{SAMPLES}:refuse_nobody"},
            {"name": "buggy", "hooks": ["mail"], "module": f"{SAMPLES}:broken"},
            {"name": "remote", "hooks": ["data"], "url": f"http://127.0.0.1:{port}/hook"},
            {"name": "audit", "hooks": ["delivered"]},
            {"name": "unused", "hooks": ["auth"], "module": f"{SAMPLES}:third"},
        ],
    )
    wire = await Wire.open(system.smtp_port)
    reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY)
    assert reply.startswith("250 2.0.0 Ok: queued as ")  # every failing plugin is Ignore
    assert (await wire.command("MAIL FROM:<a@sender.test>")).startswith("250")
    assert (await wire.command("RCPT TO:<nobody@example.com>")).startswith("550 5.1.1")
    await wire.close()

    found = await eventually(
        lambda: shown(system),
        until=lambda found: found["policy"]["calls"] == {"continue": 1, "refuse": 1},
        what="the calls in the heartbeat",
        timeout=30,
    )
    policy = found["policy"]
    assert policy["state"] == "ready"
    assert policy["reached_by"] == "module"
    assert policy["hooks"] == ["rcpt"]
    assert policy["instances"] == 1
    assert policy["last_success"] is not None
    assert policy["last_failure"] is None
    buggy = found["buggy"]
    assert buggy["state"] == "failing"
    assert buggy["reason"] == "at mail: RuntimeError: a bug in the plugin"
    assert buggy["calls"] == {"error": 2}
    remote = found["remote"]
    assert remote["state"] == "failing"
    assert remote["reached_by"] == "url"
    assert remote["reason"].startswith("at data: ")
    assert remote["calls"] == {"error": 1}
    assert (found["unused"]["state"], found["unused"]["calls"]) == ("idle", {})
    assert found["audit"]["state"] == "unknown"
    assert found["audit"]["reason"] == "an event plugin"

    # The remote plugin comes up: its next call succeeds, and it is ready again.
    async with continuing_plugin(port):
        wire = await Wire.open(system.smtp_port)
        assert (await wire.transaction("a@sender.test", ["u@example.com"], BODY)).startswith("250")
        await wire.close()
        found = await eventually(
            lambda: shown(system),
            until=lambda found: found["remote"]["state"] == "ready",
            what="the remote plugin ready again",
            timeout=30,
        )
    remote = found["remote"]
    assert remote["calls"] == {"error": 1, "continue": 1}
    assert remote["last_success"] > remote["last_failure"]
    assert remote["last_failure_reason"].startswith("at data: ")  # still told

    # The same for people and scripts.
    table = await asyncio.to_thread(empathctl, system, "plugins")
    assert table.returncode == 0, table.stderr
    rows = [line.replace("│", " ").split() for line in table.stdout.splitlines()]
    by_name = {row[0]: row for row in rows if row}
    assert by_name["buggy"][1:6] == ["failing:", "at", "mail:", "RuntimeError:", "a"]
    assert by_name["remote"][1:5] == ["ready", "url", "data", "continue=1,"]
    scripted = await asyncio.to_thread(empathctl, system, "-o", "json", "plugins")
    assert scripted.returncode == 0, scripted.stderr
    assert {p["name"]: p["state"] for p in json.loads(scripted.stdout)["plugins"]} == {
        "audit": "unknown",
        "buggy": "failing",
        "policy": "ready",
        "remote": "ready",
        "unused": "idle",
    }


async def test_a_plugin_no_ingress_reports_is_unknown(
    start_system: StartSystem,
) -> None:
    system = await start_system(
        **with_control("spool"),
        plugins=[{"name": "policy", "hooks": ["rcpt"], "module": f"{SAMPLES}:third"}],
    )
    found = await shown(system)
    assert found["policy"]["state"] == "unknown"
    assert found["policy"]["reason"] == "no ingress instance reports it"
    assert found["policy"]["instances"] == 0
