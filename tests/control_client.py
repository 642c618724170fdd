"""The control API as its clients reach it: over HTTP with the token, and through `empathctl`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port
from tests.system import System
from tests.wire import Wire

TOKEN = "test-token-0123456789"
EMPATHCTL = str(Path(sys.executable).parent / "empathctl")


def with_control(*services: str) -> dict[str, Any]:
    """Settings that run the control service beside `services`, with the tests' token."""
    return {
        "only": (*services, "control"),
        "control_token": TOKEN,
        "control_listen": f"127.0.0.1:{free_port()}",
    }


def url(system: System) -> str:
    return f"http://{system.settings.control_listen}"


async def call(
    system: System, method: str, path: str, *, token: str | None = TOKEN, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url(system), headers=headers) as client:
        return await client.request(method, path, **kwargs)


def empathctl(system: System | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `empathctl` pointed at `system` (no config file of the user's in the way)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EMPATHCTL")}
    environment["HOME"] = "/nonexistent"
    if system is not None:
        environment.update(EMPATHCTL_URL=url(system), EMPATHCTL_TOKEN=TOKEN)
    environment.update(env)
    return subprocess.run(
        [EMPATHCTL, *args], env=environment, capture_output=True, text=True, timeout=60
    )


async def view_rows(system: System, queue_id: str) -> list[list[str]]:
    """`empathctl queue view` of a message, as its table's rows of cells."""
    table = await asyncio.to_thread(empathctl, system, "queue", "view", queue_id)
    assert table.returncode == 0, table.stderr
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in table.stdout.splitlines()
        if line.startswith("│")
    ]


async def queue_some(system: System, senders: list[str], to: str = "u@example.com") -> list[str]:
    """Queue one message from each sender; their ids, once the spool lists them all."""
    wire = await Wire.open(system.smtp_port)
    ids = []
    for sender in senders:
        reply = await wire.transaction(sender, [to], b"Subject: s\r\n\r\nbody\r\n")
        ids.append(reply.rsplit(" ", 1)[1])
    await wire.close()
    for queue_id in ids:
        await system.entry(queue_id)
    await system.listed(len(await system.entries()))
    return ids
