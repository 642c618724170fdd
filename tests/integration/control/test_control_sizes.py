"""A queue of large records through the control API: every answer fits in one NATS message,
pages are cut by size, one huge record can still be read, and empathctl keeps working."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import nats.errors
import pytest

from empath.core import queries
from empath.spool import api as spool_api
from tests.control_client import call, empathctl
from tests.system import System


def address(n: int) -> str:
    return f"{'u' * 60}{n:04d}@{'d' * 60}.{'e' * 60}.example.com"


async def crowd(system: System, messages: int, recipients: int) -> list[str]:
    """`messages` legal messages (from a trusted client) to `recipients` long addresses each."""
    wire = await system.wire()
    ids = []
    for n in range(messages):
        to = [address(r) for r in range(recipients)]
        reply = await wire.transaction(f"s{n}@one.test", to, b"Subject: many\r\n\r\nbody\r\n")
        assert reply.startswith("250"), reply
        ids.append(reply.rsplit(" ", 1)[1])
    await wire.close()
    await system.listed(messages)
    return ids


async def test_five_messages_to_1000_long_recipients_are_listed_page_by_page(
    control: System,
) -> None:
    ids = await crowd(control, 5, 1000)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 100}
    pages = 0
    while True:
        response = await call(control, "GET", "/api/v1/queue", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(response.content) <= control.bus.nc.max_payload
        pages += 1
        for item in page["items"]:
            assert len(item["recipients"]) == queries.LIST_RECIPIENTS
            assert item["recipients"][0]["address"] == address(0)
            assert page["omitted"][item["id"]]["recipients"] == 1000 - queries.LIST_RECIPIENTS
        seen += [item["id"] for item in page["items"]]
        if page["next_after"] is None:
            break
        params["after"] = page["next_after"]
    assert seen == ids

    one = await call(control, "GET", f"/api/v1/queue/{ids[0]}")
    assert one.status_code == 200
    assert [r["address"] for r in one.json()["item"]["recipients"]] == [
        address(r) for r in range(1000)
    ]
    assert "omitted" not in one.json()
    headers = await call(control, "GET", f"/api/v1/queue/{ids[0]}/headers")
    assert headers.json()["headers"].endswith("Subject: many")

    listed = await asyncio.to_thread(empathctl, control, "queue", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(queue_id in listed.stdout for queue_id in ids)
    assert "+998" in listed.stdout  # the table counts every recipient, not the ones listed
    as_json = await asyncio.to_thread(empathctl, control, "-o", "json", "queue", "list")
    assert [i["id"] for i in json.loads(as_json.stdout)["items"]] == ids
    view = await asyncio.to_thread(empathctl, control, "queue", "view", ids[4])
    assert view.returncode == 0, view.stderr
    assert "recipient" in view.stdout
    whole = await asyncio.to_thread(empathctl, control, "-o", "json", "queue", "view", ids[4])
    assert len(json.loads(whole.stdout)["item"]["recipients"]) == 1000


class Refusing:
    """A request whose first answer NATS refuses as too large."""

    def __init__(self) -> None:
        self.reply = "_INBOX.test"
        self.sent: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        if not self.sent and len(data) > 10:
            self.sent.append(b"")
            raise nats.errors.MaxPayloadError
        self.sent.append(data)


async def test_an_answer_that_cannot_be_sent_is_logged_at_warning_and_the_caller_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nc: Any = type("NC", (), {"max_payload": 1024})()
    query = spool_api.QueryAPI(nc, None, None, None, None)  # type: ignore[arg-type]
    msg: Any = Refusing()
    with caplog.at_level(logging.WARNING, logger="empath.spool.api"):
        await query._send(msg, queries.STATS, queries.FreezeAnswer(frozen=True))
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "cannot send the answer to stats" in warning.getMessage()
    assert "MaxPayloadError" in warning.getMessage()
    answer = json.loads(msg.sent[-1])
    assert answer["code"] == 503
    assert "could not send its answer" in answer["error"]
