"""The spool's query API over NATS request/reply (the control service is its client).

Subjects, requests and answers are in `queries` (`empath.api.queue.list|get|counts|...`),
served by every spool replica in one queue group. A request that does not fit its model gets
`{"error": ..., "code": 400}` naming the field, and changes nothing. Every request is
answered, with the code of what went wrong: 400 a bad request or any other permanent error
(retrying cannot help), 404 no such message, 409 a message not in a state for it
(`Conflict`), 503 a temporary failure, and 503 too for anything unforeseen (a bug, a stored
record that does not load), which is logged with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from empath.core import addresses, errors, flags, names, queries
from empath.core import store as store_module
from empath.spool import controls, records, stats, view

log = logging.getLogger("empath.spool.api")


class QueryAPI:
    def __init__(
        self,
        nc: NATS,
        store: records.Records,
        flag_store: KeyValue,
        live: view.QueueView,
        objects: store_module.ObjectStore,
        frozen: flags.Cached | None = None,
    ) -> None:
        self.nc = nc
        # The intake's view of the flag (`Scheduler.arrive`): told at once of a change made here.
        self.frozen = frozen
        self.objects = objects
        self.records = store
        self.view = live
        self.flags = flag_store
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        await self._serve(queries.LIST, self._list)
        await self._serve(queries.GET, self._get)
        await self._serve(queries.COUNTS, self._counts)
        await self._serve(queries.STATS, self._stats)
        await self._serve(queries.RETRY, self._retry)
        await self._serve(queries.DELETE, self._delete)
        await self._serve(queries.HOLD, self._hold)
        await self._serve(queries.RELEASE, self._release)
        await self._serve(queries.FREEZE, self._freeze)
        await self._serve(queries.UNFREEZE, self._unfreeze)
        # The server has the subscriptions once it answers a ping: only then may the spool
        # say it is ready, or the first query after "ready" finds no responders.
        await self.nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()
        self._subs.clear()

    async def _serve(
        self,
        call: queries.Call[queries.RequestT, queries.AnswerT],
        handler: Callable[[queries.RequestT], Awaitable[queries.AnswerT]],
    ) -> None:
        """Answer `call` with `handler`, which only ever sees a valid request; what goes wrong
        becomes the error answer with its code, so no request goes unanswered."""

        async def respond(msg: Msg) -> None:
            reply: queries.Answer
            try:
                reply = await handler(queries.parse_request(call.request, msg.data))
            except queries.BadQuery as error:
                reply = queries.ErrorAnswer(error=str(error), code=400)
            except errors.NotFound as error:
                reply = queries.ErrorAnswer(error=str(error), code=404)
            except errors.Conflict as error:
                reply = queries.ErrorAnswer(error=str(error), code=409)
            except errors.PermanentError as error:
                # Retrying cannot help, so not 503; and 500 is not a code the answer model
                # has (control replicas not yet upgraded would not read it).
                log.warning("%s refused: %s", call.name, error)
                reply = queries.ErrorAnswer(error=str(error), code=400)
            except errors.EmpathError as error:
                reply = queries.ErrorAnswer(error=str(error), code=503)
            except Exception as error:
                # A bug, or a stored record that does not load: the details go to the log,
                # the caller gets an answer now rather than its timeout.
                log.exception("%s failed unexpectedly", call.name)
                reply = queries.ErrorAnswer(
                    error=f"the spool failed to answer {call.name} ({type(error).__name__}); "
                    "its log has the details",
                    code=503,
                )
            if msg.reply:
                await self._send(msg, call, reply)

        self._subs.append(
            await self.nc.subscribe(call.subject, queue=names.QUERY_QUEUE_GROUP, cb=respond)
        )

    async def _send(self, msg: Msg, call: queries.Call[Any, Any], reply: queries.Answer) -> None:
        """Send `reply`; when it cannot go, say why in the log (WARNING) and, if NATS still
        carries it, send the caller a 503 that says so instead of letting it time out."""
        data = queries.fit_answer(reply, self.budget).model_dump_json().encode()
        try:
            await msg.respond(data)
            return
        except (nats.errors.Error, OSError) as error:
            log.warning(
                "cannot send the answer to %s (%d bytes, NATS carries %d): %r",
                call.name,
                len(data),
                self.nc.max_payload,
                error,
            )
            reason = f"the spool could not send its answer: {error!r}"
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.respond(
                queries.ErrorAnswer(error=reason, code=503).model_dump_json().encode()
            )

    @property
    def budget(self) -> int:
        """Bytes of JSON the items of one answer may take."""
        return self.nc.max_payload - queries.RESERVE

    async def _list(self, request: queries.ListRequest) -> queries.ListAnswer:
        after = request.after
        entries = self.view.snapshot()
        if request.sort == "-age":
            entries.reverse()
            if after is not None:  # newest first: page on to older ids
                entries = [e for e in entries if e.id < after]
                after = None
        now = datetime.now(UTC)
        domain = addresses.normal_domain(request.domain) if request.domain is not None else None
        sender = request.sender.lower() if request.sender is not None else None
        min_age = request.min_age
        entries = [
            e
            for e in entries
            if (domain is None or domain in e.domains)
            and (sender is None or sender in e.sender.lower())
            and (min_age is None or (now - e.received_at).total_seconds() >= min_age)
        ]
        page = records.page_of(entries, state=request.state, limit=request.limit, after=after)
        items, omitted, more = queries.fit_page(
            [summary.entry() for summary in page.items],
            self.budget,
            more=page.next_after is not None,
        )
        return queries.ListAnswer(
            items=items, next_after=items[-1].id if more and items else None, omitted=omitted
        )

    async def _stats(self, request: queries.StatsRequest) -> queries.StatsAnswer:
        frozen = await flags.is_frozen(self.flags)
        circuits = await stats.read_circuits(self.nc.jetstream())
        entries, now = list(self.view.entries.values()), datetime.now(UTC)
        found = stats.summary(entries, now=now, frozen=frozen, circuits=circuits)
        if request.activity_minutes is None:
            return found
        recent = stats.activity(entries, now=now, minutes=request.activity_minutes)
        return found.model_copy(update={"activity": recent})

    async def _retry(self, request: queries.RetryRequest) -> queries.RetryAnswer:
        if request.domain is not None:
            count = await controls.retry_domain(self.records, self.view.snapshot(), request.domain)
            return queries.RetryAnswer(retried=count)
        assert request.id is not None  # the model wants one of the two
        entry = await controls.retry(self.records, request.id)
        return queries.RetryAnswer(retried=1, item=entry)

    async def _delete(self, request: queries.DeleteRequest) -> queries.DeleteAnswer:
        left = await controls.delete(self.records, self.objects, request.id, request.recipients)
        return queries.DeleteAnswer(deleted=True, item=left)

    async def _get(self, request: queries.GetRequest) -> queries.GetAnswer:
        return queries.GetAnswer(item=await self.records.get(request.id))

    async def _counts(self, request: queries.CountsRequest) -> queries.CountsAnswer:
        counts = records.counts_of(list(self.view.entries.values()))
        return queries.CountsAnswer(counts=counts, frozen=await flags.is_frozen(self.flags))

    async def _hold(self, request: queries.HoldRequest) -> queries.HoldAnswer:
        return queries.HoldAnswer(item=await controls.hold(self.records, request.id))

    async def _release(self, request: queries.ReleaseRequest) -> queries.ReleaseAnswer:
        return queries.ReleaseAnswer(item=await controls.release(self.records, request.id))

    async def _freeze(self, request: queries.FreezeRequest) -> queries.FreezeAnswer:
        await controls.freeze(self.flags)
        if self.frozen is not None:
            self.frozen.forget()
        return queries.FreezeAnswer(frozen=True)

    async def _unfreeze(self, request: queries.UnfreezeRequest) -> queries.UnfreezeAnswer:
        await controls.unfreeze(self.flags)
        if self.frozen is not None:
            self.frozen.forget()
        return queries.UnfreezeAnswer(frozen=False)
