"""empathctl prints what the queue holds as text: markup in the data is shown, never obeyed,
and a command that crashes never exits 0."""

from __future__ import annotations

import asyncio
import json

from tests.control_client import empathctl, queue_some
from tests.system import System

MARKUP_SENDERS = ['"[/bold]"@one.test', '"[red]x[/red]"@one.test', '"[link=http://e]y"@one.test']


async def test_senders_that_look_like_markup_are_printed_as_they_are(control: System) -> None:
    ids = await queue_some(control, MARKUP_SENDERS)
    listed = await asyncio.to_thread(empathctl, control, "queue", "list")
    assert listed.returncode == 0, listed.stderr
    for sender in MARKUP_SENDERS:
        assert sender in listed.stdout
    view = await asyncio.to_thread(empathctl, control, "queue", "view", ids[0])
    assert view.returncode == 0, view.stderr
    assert MARKUP_SENDERS[0] in view.stdout
    as_json = await asyncio.to_thread(empathctl, control, "-o", "json", "queue", "list")
    assert {i["sender"] for i in json.loads(as_json.stdout)["items"]} == set(MARKUP_SENDERS)
