"""A MailPlugin's status tells how its last calls went, from what the services publish: the
operator asks the MailServer's control API (`GET /api/v1/plugins`, a real control service
with ingress and the spool here) with the control token it derives from its key, since it
may not read the token Secret."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from empath.operator import plugincalls
from tests.control_client import with_control
from tests.emulator import Cluster
from tests.operator_harness import NS, PLUGINS, SERVERS, Api, mailplugin, mailserver
from tests.servers import continuing_plugin, free_port
from tests.system import StartSystem
from tests.wire import Wire

KEY = b"the-operator-key-0123456789abcdef"
SELECTOR = {"matchLabels": {"team": "mail"}}
BODY = b"Subject: calls\r\n\r\nhello\r\n"

pytestmark = pytest.mark.kmock(cls=Cluster)


def condition(plugin: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (plugin.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


async def send(port: int) -> None:
    wire = await Wire.open(port)
    reply = await wire.transaction("a@sender.test", ["u@example.com"], BODY)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply  # the plugin's policy: Ignore
    await wire.close()


async def test_a_plugins_status_shows_its_failing_calls_then_ready_again(
    api: Api, operator: Any, start_system: StartSystem, tmp_path: Path
) -> None:
    token = plugincalls.control_token(KEY, NS, "corp")
    hook = free_port()
    control = with_control("ingress", "spool")
    system = await start_system(
        **{**control, "control_token": token},
        frozen=True,
        plugins=[{"name": "spam-check", "hooks": ["rcpt"], "url": f"http://127.0.0.1:{hook}/"}],
    )
    (tmp_path / "key").write_bytes(KEY + b"\n")
    await operator(
        key_file=str(tmp_path / "key"),
        # Where the cluster has corp-control.mail.svc, the tests have their own control.
        control_url=f"http://{control['control_listen']}/api/v1/plugins",
        resync_seconds=1,
    )
    await api.create(PLUGINS, mailplugin("spam-check", {"team": "mail"}))
    await api.create(SERVERS, mailserver(pluginSelector=SELECTOR))

    # The token Secret the operator made holds the token it derives (and control has).
    secret = await api.wait(f"/api/v1/namespaces/{NS}/secrets/corp-control-token", bool)
    assert base64.b64decode(secret["data"]["token"]).decode() == token

    # Nothing called it yet: the operator asked, and the calls are told as idle.
    idle = await api.wait(
        f"{PLUGINS}/spam-check", lambda o: condition(o, "CallsReported").get("status") == "True"
    )
    assert [(c["mailServer"], c["state"]) for c in idle["status"]["lastCall"]] == [("corp", "idle")]
    assert condition(idle, "Ready")["reason"] == "Selected"

    # Its endpoint is down: ingress's call fails, and the MailPlugin says so and why.
    await send(system.smtp_port)
    failing = await api.wait(
        f"{PLUGINS}/spam-check",
        lambda o: condition(o, "Ready").get("reason") == "Failing",
        timeout=40,
    )
    ready = condition(failing, "Ready")
    assert ready["status"] == "False"
    assert ready["message"].startswith("corp: at rcpt: ")
    (call,) = failing["status"]["lastCall"]
    assert call["state"] == "failing"
    assert call["calls"] == {"error": 1}
    assert call["lastFailureReason"].startswith("at rcpt: ")
    assert call["lastSuccess"] is None

    # The plugin comes up: its next call succeeds, and the MailPlugin is ready again.
    async with continuing_plugin(hook, "/"):
        await send(system.smtp_port)
        recovered = await api.wait(
            f"{PLUGINS}/spam-check",
            lambda o: condition(o, "Ready").get("status") == "True",
            timeout=40,
        )
    assert condition(recovered, "Ready")["reason"] == "Selected"
    (call,) = recovered["status"]["lastCall"]
    assert call["state"] == "ready"
    assert call["calls"] == {"error": 1, "continue": 1}
    assert call["lastSuccess"] > call["lastFailure"]


async def test_a_control_that_refuses_or_does_not_answer_is_a_reason_never_a_crash(
    start_system: StartSystem,
) -> None:
    """A token Secret made before the operator had its key holds a random token: control
    refuses the derived one, and the status says why; so for a control that does not answer."""
    control = with_control("spool")  # control's token is the tests' own, not a derived one
    await start_system(**control)
    url = f"http://{control['control_listen']}/api/v1/plugins"

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, never answers
        writer.close()

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    mute_url = f"http://127.0.0.1:{mute.sockets[0].getsockname()[1]}/api/v1/plugins"
    gone = f"http://127.0.0.1:{free_port()}/api/v1/plugins"
    try:
        async with httpx.AsyncClient() as http:

            async def ask(at: str) -> tuple[str, str]:
                heard = await plugincalls.ask(
                    http, plugincalls.Caller(key=KEY, url=at, timeout=1), NS, "corp"
                )
                assert heard.plugins == {}
                assert heard.problem is not None
                return heard.problem

            reason, message = await ask(url)
            assert reason == "ControlTokenUnknown"
            assert "corp-control-token" in message
            reason, message = await ask(gone)
            assert reason == "ControlUnreachable"
            assert message.startswith(f"{gone}: ConnectError")
            reason, message = await ask(mute_url)
            assert reason == "ControlUnreachable"
            assert message.startswith(f"{mute_url}: ")
    finally:
        mute.close()
