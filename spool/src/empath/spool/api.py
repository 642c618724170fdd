"""The spool's query API over NATS request/reply (the control service is its client).

Subjects are in `names` (`empath.api.queue.list|get|counts`), served by every spool replica in
one queue group. Requests and replies are JSON; a bad request gets `{"error": ..., "code": 400}`
and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from empath.core import addresses, errors, flags, ids, names, queue
from empath.core import store as store_module
from empath.spool import controls, records, stats, view

log = logging.getLogger("empath.spool.api")

MAX_LIMIT = 1000


class BadRequest(errors.PermanentError):
    pass


def _request(msg: Msg) -> dict[str, Any]:
    if not msg.data:
        return {}
    try:
        body = json.loads(msg.data)
    except json.JSONDecodeError as error:
        raise BadRequest(f"request is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("request must be a JSON object")
    return body


class QueryAPI:
    def __init__(
        self,
        nc: NATS,
        store: records.Records,
        flag_store: KeyValue,
        live: view.QueueView,
        objects: store_module.ObjectStore,
    ) -> None:
        self.nc = nc
        self.objects = objects
        self.records = store
        self.view = live
        self.flags = flag_store
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        for subject, handler in (
            (names.QUERY_LIST_SUBJECT, self._list),
            (names.QUERY_GET_SUBJECT, self._get),
            (names.QUERY_COUNTS_SUBJECT, self._counts),
            (names.QUERY_STATS_SUBJECT, self._stats),
            (names.QUERY_RETRY_SUBJECT, self._retry),
            (names.QUERY_DELETE_SUBJECT, self._delete),
            (names.QUERY_HOLD_SUBJECT, self._hold),
            (names.QUERY_RELEASE_SUBJECT, self._release),
            (names.QUERY_FREEZE_SUBJECT, self._freeze),
            (names.QUERY_UNFREEZE_SUBJECT, self._unfreeze),
        ):
            self._subs.append(
                await self.nc.subscribe(
                    subject, queue=names.QUERY_QUEUE_GROUP, cb=self._wrap(handler)
                )
            )

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()
        self._subs.clear()

    def _wrap(self, handler: Any) -> Any:
        async def respond(msg: Msg) -> None:
            try:
                reply: dict[str, Any] = await handler(_request(msg))
            except BadRequest as error:
                reply = {"error": str(error), "code": 400}
            except errors.NotFound as error:
                reply = {"error": str(error), "code": 404}
            except errors.PermanentError as error:
                reply = {"error": str(error), "code": 409}
            except errors.EmpathError as error:
                reply = {"error": str(error), "code": 503}
            if msg.reply:
                await msg.respond(json.dumps(reply, default=str).encode())

        return respond

    async def _list(self, request: dict[str, Any]) -> dict[str, Any]:
        state = request.get("state")
        if state is not None and state not in {s.value for s in queue.State}:
            raise BadRequest(f"unknown state {state!r}")
        limit = request.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
        after = request.get("after")
        if after is not None and (not isinstance(after, str) or not ids.is_valid(after)):
            raise BadRequest("after must be a queue id")
        domain = _text(request, "domain")
        sender = _text(request, "sender")
        min_age = request.get("min_age")
        if min_age is not None and (not isinstance(min_age, int | float) or min_age < 0):
            raise BadRequest("min_age must be a number of seconds")
        sort = request.get("sort", "age")
        if sort not in {"age", "-age"}:
            raise BadRequest("sort must be age (oldest first) or -age (newest first)")
        entries = self.view.snapshot()
        if sort == "-age":
            entries.reverse()
            if after is not None:  # newest first: page on to older ids
                entries = [e for e in entries if e.id < after]
                after = None
        now = datetime.now(UTC)
        entries = [
            e
            for e in entries
            if (
                domain is None
                or any(addresses.domain_of(r.address) == domain.lower() for r in e.recipients)
            )
            and (sender is None or sender.lower() in e.sender.lower())
            and (min_age is None or (now - e.received_at).total_seconds() >= min_age)
        ]
        page = records.page_of(
            entries,
            state=queue.State(state) if state else None,
            limit=limit,
            after=after,
        )
        return {
            "items": [entry.model_dump(mode="json") for entry in page.items],
            "next_after": page.next_after,
        }

    async def _stats(self, request: dict[str, Any]) -> dict[str, Any]:
        result = stats.summary(list(self.view.entries.values()), now=datetime.now(UTC))
        result["frozen"] = await flags.is_frozen(self.flags)
        return result

    async def _retry(self, request: dict[str, Any]) -> dict[str, Any]:
        domain = _text(request, "domain")
        if domain is not None:
            count = await controls.retry_domain(self.records, self.view.snapshot(), domain)
            return {"retried": count}
        entry = await controls.retry(self.records, _id(request))
        return {"retried": 1, "item": entry.model_dump(mode="json")}

    async def _delete(self, request: dict[str, Any]) -> dict[str, Any]:
        recipients = request.get("recipients")
        if recipients is not None and (
            not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients)
        ):
            raise BadRequest("recipients must be a list of addresses")
        left = await controls.delete(self.records, self.objects, _id(request), recipients)
        return {"deleted": True, "item": left.model_dump(mode="json") if left else None}

    async def _get(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"item": (await self.records.get(_id(request))).model_dump(mode="json")}

    async def _counts(self, request: dict[str, Any]) -> dict[str, Any]:
        counts = records.counts_of(list(self.view.entries.values()))
        return {"counts": counts, "frozen": await flags.is_frozen(self.flags)}

    async def _hold(self, request: dict[str, Any]) -> dict[str, Any]:
        entry = await controls.hold(self.records, _id(request))
        return {"item": entry.model_dump(mode="json")}

    async def _release(self, request: dict[str, Any]) -> dict[str, Any]:
        entry = await controls.release(self.records, _id(request))
        return {"item": entry.model_dump(mode="json")}

    async def _freeze(self, request: dict[str, Any]) -> dict[str, Any]:
        await controls.freeze(self.flags)
        return {"frozen": True}

    async def _unfreeze(self, request: dict[str, Any]) -> dict[str, Any]:
        await controls.unfreeze(self.flags)
        return {"frozen": False}


def _text(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _id(request: dict[str, Any]) -> str:
    message_id = request.get("id")
    if not isinstance(message_id, str) or not ids.is_valid(message_id):
        raise BadRequest("id must be a queue id")
    return message_id
