"""Queue calls: list, view, stats, retry, delete, hold, release, freeze, unfreeze.

The spool answers them over NATS (`queries`); this module turns HTTP parameters into the
spool's requests and its answers into HTTP answers, and adds the message text from the bucket
where a call asks for it.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field

from empath.control import calls
from empath.core import addresses, bodies, errors, queries, queue, store


class MessageAnswer(calls.Model):
    """A message's record, with its header section and whole text when asked for."""

    item: queue.Entry
    omitted: queries.Omitted | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="What the record leaves out to fit NATS's payload limit.",
    )
    headers: str | None = Field(default=None, exclude_if=lambda value: value is None)
    body: str | None = Field(default=None, exclude_if=lambda value: value is None)
    body_gone: bool = Field(
        default=False,
        exclude_if=lambda value: not value,
        description="The body is no longer in the bucket (the message is finished): the "
        "record is all there is.",
    )


class ViewQuery(calls.Parameters):
    body: bool = Field(
        default=False, description="Include the whole message (true, 1, yes; false, 0, no)."
    )


GIVE_DOMAIN = "give the domain whose deferred mail to retry"
GivenDomain = Annotated[addresses.Domain, calls.on_wrong_type(GIVE_DOMAIN)]


class RetryDomainQuery(calls.Parameters):
    domain: GivenDomain | None = Field(
        default=None, description="The domain (or give it in the body)."
    )


class RetryDomainBody(calls.Parameters):
    domain: GivenDomain | None = Field(
        default=None, description="Retry every deferred message to this domain."
    )


class DeleteQuery(calls.Parameters):
    recipient: queries.Recipients | None = Field(
        default=None, description="Only this recipient (repeatable)."
    )


class DeleteBody(calls.Parameters):
    recipients: queries.Recipients | None = Field(
        default=None, description="Only these recipients."
    )


async def queue_list(request: web.Request) -> web.Response:
    query = calls.query_of(
        queries.ListRequest,
        **{
            name: request.query.get(name) for name in ("state", "domain", "sender", "after", "sort")
        },
        limit=calls.number(request, "limit", integer=True),
        min_age=calls.number(request, "min_age"),
    )
    return calls.reply(await calls.ask(request, queries.LIST, query))


async def _get(request: web.Request) -> queries.GetAnswer:
    query = calls.query_of(queries.GetRequest, id=calls.message_id(request))
    return await calls.ask(request, queries.GET, query)


async def with_message(request: web.Request, *, body: bool) -> web.Response:
    """A message's record with its header section, and its whole text when `body`."""
    answer = await _get(request)
    if answer.item.finished and answer.item.body_seq is not None:
        # Its event still holds it for a while, but a finished message's body is no longer
        # kept for anyone, as a stored one is removed from the bucket.
        return calls.reply(MessageAnswer(item=answer.item, omitted=answer.omitted, body_gone=True))
    # In the bucket, or (a small message not stored yet) in its `received` event.
    found = bodies.Bodies(objects=request.app[calls.OBJECTS], js=request.app[calls.LINK].bus.js)
    try:
        # For the headers, the head of the body is enough (a message may be 25 MB).
        raw = await found.get(answer.item, limit=None if body else store.HEAD_LIMIT)
    except errors.NotFound:
        # Delivered or failed, its body removed: the record still says what happened.
        return calls.reply(MessageAnswer(item=answer.item, omitted=answer.omitted, body_gone=True))
    except errors.EmpathError as error:
        raise calls.Problem(503, str(error)) from None
    return calls.reply(
        MessageAnswer(
            item=answer.item,
            omitted=answer.omitted,
            headers=raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace"),
            body=raw.decode("utf-8", "replace") if body else None,
        )
    )


async def queue_view(request: web.Request) -> web.Response:
    if not calls.query_parameters(request, ViewQuery).body:
        return calls.reply(await _get(request))
    return await with_message(request, body=True)


async def queue_headers(request: web.Request) -> web.Response:
    return await with_message(request, body=False)


async def queue_stats(request: web.Request) -> web.Response:
    return calls.reply(await calls.ask(request, queries.STATS, queries.StatsRequest()))


async def queue_retry(request: web.Request) -> web.Response:
    query = calls.query_of(queries.RetryRequest, id=calls.message_id(request))
    return calls.reply(await calls.ask(request, queries.RETRY, query))


async def queue_retry_domain(request: web.Request) -> web.Response:
    body = await calls.body_of(request, RetryDomainBody)
    domain = body.domain or calls.query_parameters(request, RetryDomainQuery).domain
    if domain is None:
        raise calls.Problem(400, GIVE_DOMAIN)
    query = calls.query_of(queries.RetryRequest, domain=domain)
    return calls.reply(await calls.ask(request, queries.RETRY, query))


async def queue_delete(request: web.Request) -> web.Response:
    body = await calls.body_of(request, DeleteBody)
    recipients = body.recipients
    if "recipients" not in body.model_fields_set:
        recipients = calls.query_parameters(request, DeleteQuery).recipient
    query = calls.query_of(
        queries.DeleteRequest, id=calls.message_id(request), recipients=recipients or None
    )
    return calls.reply(await calls.ask(request, queries.DELETE, query))


async def queue_hold(request: web.Request) -> web.Response:
    query = calls.query_of(queries.HoldRequest, id=calls.message_id(request))
    return calls.reply(await calls.ask(request, queries.HOLD, query))


async def queue_release(request: web.Request) -> web.Response:
    query = calls.query_of(queries.ReleaseRequest, id=calls.message_id(request))
    return calls.reply(await calls.ask(request, queries.RELEASE, query))


async def queue_freeze(request: web.Request) -> web.Response:
    return calls.reply(await calls.ask(request, queries.FREEZE, queries.FreezeRequest()))


async def queue_unfreeze(request: web.Request) -> web.Response:
    return calls.reply(await calls.ask(request, queries.UNFREEZE, queries.UnfreezeRequest()))


ONE = (400, 404, 409, 503)  # a call on one message: bad id, no such message, wrong state

ROUTES = (
    calls.Route(
        "GET",
        "/api/v1/queue",
        handler=queue_list,
        summary="List messages, oldest first",
        answer=queries.ListAnswer,
        query=queries.ListRequest,
    ),
    calls.Route(
        "GET",
        "/api/v1/queue/stats",
        handler=queue_stats,
        summary="Counts by state and domain, the oldest message, age buckets (qshape)",
        answer=queries.StatsAnswer,
        refusals=(503,),
    ),
    calls.Route(
        "POST",
        "/api/v1/queue/retry",
        handler=queue_retry_domain,
        summary="Retry now every deferred message to a domain",
        answer=queries.RetryAnswer,
        body=RetryDomainBody,
        query=RetryDomainQuery,
    ),
    calls.Route(
        "POST",
        "/api/v1/queue/freeze",
        handler=queue_freeze,
        summary="Freeze the queue: no new attempts",
        answer=queries.FreezeAnswer,
        refusals=(503,),
    ),
    calls.Route(
        "POST",
        "/api/v1/queue/unfreeze",
        handler=queue_unfreeze,
        summary="Unfreeze the queue",
        answer=queries.UnfreezeAnswer,
        refusals=(503,),
    ),
    calls.Route(
        "GET",
        "/api/v1/queue/{id}",
        handler=queue_view,
        summary="One message: envelope, recipients, attempts; body=true adds its text",
        answer=MessageAnswer,
        query=ViewQuery,
        refusals=ONE,
        reads_message=True,
    ),
    calls.Route(
        "GET",
        "/api/v1/queue/{id}/headers",
        handler=queue_headers,
        summary="One message with its header section",
        answer=MessageAnswer,
        refusals=ONE,
        reads_message=True,
    ),
    calls.Route(
        "DELETE",
        "/api/v1/queue/{id}",
        handler=queue_delete,
        summary="Delete a message (no bounce is sent), or only the recipients given",
        answer=queries.DeleteAnswer,
        body=DeleteBody,
        query=DeleteQuery,
        refusals=ONE,
    ),
    calls.Route(
        "POST",
        "/api/v1/queue/{id}/retry",
        handler=queue_retry,
        summary="Retry now",
        answer=queries.RetryAnswer,
        refusals=ONE,
    ),
    calls.Route(
        "POST",
        "/api/v1/queue/{id}/hold",
        handler=queue_hold,
        summary="Hold",
        answer=queries.HoldAnswer,
        refusals=ONE,
    ),
    calls.Route(
        "POST",
        "/api/v1/queue/{id}/release",
        handler=queue_release,
        summary="Release a held message",
        answer=queries.ReleaseAnswer,
        refusals=ONE,
    ),
)
