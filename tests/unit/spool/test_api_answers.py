"""Every query gets an answer, with the code of what went wrong; the spool's API over a NATS
connection kept in memory."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.msg import Msg

from empath.core import errors, queries, queue
from empath.spool import api, controls
from tests.unit.spool.samples import MESSAGE_ID, Records, View, entry

Handler = Callable[[Msg], Awaitable[None]]


class Connection:
    """A NATS connection: what was subscribed, and what was published as answers."""

    max_payload = 1024 * 1024

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.answers: list[dict[str, Any]] = []

    async def subscribe(self, subject: str, *, queue: str, cb: Handler) -> object:
        self.handlers[subject] = cb
        return object()

    async def flush(self) -> None:
        pass

    async def publish(self, subject: str, data: bytes, headers: object = None) -> None:
        self.answers.append(json.loads(data))

    async def ask(self, call: queries.Call[Any, Any], request: dict[str, Any]) -> dict[str, Any]:
        msg = Msg(self, subject=call.subject, reply="_INBOX.1", data=json.dumps(request).encode())  # type: ignore[arg-type]
        await self.handlers[call.subject](msg)
        [answer] = self.answers
        self.answers.clear()
        return answer


async def serving(records: Records) -> Connection:
    nc = Connection()
    query_api = api.QueryAPI(nc, records, None, View(records), None)  # type: ignore[arg-type]
    await query_api.start()
    return nc


async def test_a_record_that_does_not_load_is_answered_503_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        queue.Entry.model_validate_json(b'{"id": "' + MESSAGE_ID.encode() + b'"}')
    except ValueError as error:
        unreadable = error
    nc = await serving(Records(broken=unreadable))

    answer = await nc.ask(queries.GET, {"id": MESSAGE_ID})

    assert answer["code"] == 503
    assert "get" in answer["error"]
    [logged] = [r for r in caplog.records if r.name == "empath.spool.api"]
    assert logged.levelno == logging.ERROR
    assert logged.exc_info is not None


@pytest.mark.parametrize(
    ("state", "call"),
    [(queue.State.DELIVERED, queries.HOLD), (queue.State.DELIVERING, queries.RETRY)],
)
async def test_a_message_not_in_a_state_for_it_is_answered_409(
    state: queue.State, call: queries.Call[Any, Any]
) -> None:
    nc = await serving(Records(entry(state=state)))

    answer = await nc.ask(call, {"id": MESSAGE_ID})

    assert answer["code"] == 409
    assert f"is {state.value}" in answer["error"]


async def test_deleting_a_recipient_the_message_does_not_have_is_answered_409() -> None:
    nc = await serving(Records(entry("bob@example.com")))

    answer = await nc.ask(queries.DELETE, {"id": MESSAGE_ID, "recipients": ["eve@example.com"]})

    assert answer["code"] == 409
    assert "not recipients" in answer["error"]


async def test_another_permanent_error_is_answered_400_as_retrying_cannot_help(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def hold(store: object, message_id: str) -> queue.Entry:
        raise errors.ConfigurationError("EMPATH_SOMETHING is wrong")

    monkeypatch.setattr(controls, "hold", hold)
    nc = await serving(Records(entry()))

    answer = await nc.ask(queries.HOLD, {"id": MESSAGE_ID})

    assert answer == {"error": "EMPATH_SOMETHING is wrong", "code": 400}


@pytest.mark.parametrize("domain", ["example.com", "Example.COM.", "example.com."])
async def test_the_list_by_domain_matches_however_the_domain_is_spelled(domain: str) -> None:
    nc = await serving(Records(entry("bob@Example.com")))

    answer = await nc.ask(queries.LIST, {"domain": domain})

    assert [item["id"] for item in answer["items"]] == [MESSAGE_ID]
