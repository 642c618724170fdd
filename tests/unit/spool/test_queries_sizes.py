"""Answers that fit in one NATS message: pages cut by bytes, records cut to fit, and said so."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from empath.core import events, queries, queue
from tests.unit.spool.listing import START, entry, list_call

MAX_PAYLOAD = 1024 * 1024


def crowded(minute: int, recipients: int = 1000, attempts: int = 0) -> queue.Entry:
    """A legal message to `recipients` long addresses, after `attempts` attempts."""
    base = entry(minute)
    addresses = [f"{'u' * 60}{n:04d}@{'d' * 60}.{'e' * 60}.example.com" for n in range(recipients)]
    history = tuple(
        queue.AttemptRecord(
            attempt=number + 1,
            started_at=START + timedelta(minutes=number),
            finished_at=START + timedelta(minutes=number, seconds=5),
            worker="delivery-1",
            results=tuple(
                events.RecipientResult(
                    address=address, outcome="deferred", reply="451 4.3.0 try later " + "x" * 40
                )
                for address in addresses
            ),
        )
        for number in range(attempts)
    )
    return base.model_copy(
        update={
            "recipients": tuple(queue.RecipientState(address=a) for a in addresses),
            "history": history,
        }
    )


def size(answer: queries.Answer) -> int:
    return len(answer.model_dump_json().encode())


async def test_a_page_of_crowded_messages_fits_in_one_nats_message_and_pages_on() -> None:
    entries = [crowded(minute) for minute in range(5)]
    assert sum(len(e.model_dump_json()) for e in entries) > MAX_PAYLOAD  # the failing case
    query = list_call(entries, max_payload=MAX_PAYLOAD)
    seen: list[str] = []
    after = None
    while True:
        page = await query._list(queries.ListRequest(limit=100, after=after))
        assert size(page) <= MAX_PAYLOAD
        seen += [item.id for item in page.items]
        for item in page.items:
            assert len(item.recipients) == queries.LIST_RECIPIENTS
            assert page.omitted[item.id].recipients == 1000 - queries.LIST_RECIPIENTS
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [e.id for e in entries]


async def test_a_page_holds_fewer_items_when_more_would_not_fit() -> None:
    entries = [crowded(minute, recipients=100, attempts=3) for minute in range(8)]
    query = list_call(entries, max_payload=MAX_PAYLOAD)
    first = await query._list(queries.ListRequest(limit=100))
    assert 0 < len(first.items) < len(entries)
    assert size(first) <= MAX_PAYLOAD
    assert first.next_after == first.items[-1].id
    assert first.omitted == {}  # nothing cut from any item: the page is shorter instead
    seen, after = [i.id for i in first.items], first.next_after
    while after is not None:
        page = await query._list(queries.ListRequest(limit=100, after=after))
        assert size(page) <= MAX_PAYLOAD
        seen, after = seen + [i.id for i in page.items], page.next_after
    assert seen == [e.id for e in entries]


def test_a_record_too_large_for_one_answer_loses_its_oldest_attempts_first() -> None:
    record = crowded(0, recipients=300, attempts=12)
    assert len(record.model_dump_json()) > MAX_PAYLOAD
    item, omitted = queries.fit(record, MAX_PAYLOAD - queries.RESERVE)
    assert omitted is not None
    assert omitted.recipients == 0
    assert 0 < omitted.history < 12
    assert item.recipients == record.recipients
    assert item.history == record.history[omitted.history :]  # the newest kept
    assert size(queries.GetAnswer(item=item, omitted=omitted)) <= MAX_PAYLOAD


def test_a_record_that_fits_is_answered_whole() -> None:
    record = crowded(0, recipients=1000)
    assert queries.fit(record, MAX_PAYLOAD - queries.RESERVE) == (record, None)
    item, omitted = queries.fit(record, 10_000)
    assert len(item.model_dump_json()) <= 10_000
    assert omitted == queries.Omitted(recipients=1000 - len(item.recipients))
    assert item.recipients == record.recipients[: len(item.recipients)]  # the first ones kept


class Captured:
    """A request's reply subject: what the spool sends back."""

    reply = "_INBOX.test"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        self.sent.append(data)


async def test_every_answer_that_carries_a_huge_record_is_cut_to_fit_and_says_so() -> None:
    record = crowded(0, recipients=300, attempts=12)
    query = list_call([], max_payload=MAX_PAYLOAD)
    for call, answer in (
        (queries.GET, queries.GetAnswer(item=record)),
        (queries.HOLD, queries.HoldAnswer(item=record)),
        (queries.RETRY, queries.RetryAnswer(retried=1, item=record)),
        (queries.DELETE, queries.DeleteAnswer(deleted=True, item=record)),
    ):
        msg: Any = Captured()
        await query._send(msg, call, answer)
        [data] = msg.sent
        assert len(data) <= MAX_PAYLOAD
        sent = json.loads(data)
        assert sent["item"]["id"] == record.id
        assert len(sent["item"]["recipients"]) == 300
        assert 0 < sent["omitted"]["history"] == 12 - len(sent["item"]["history"])


async def test_stats_of_very_many_domains_leave_out_the_least_busy_and_say_how_many() -> None:
    domains = {
        f"{'d' * 60}{n:06d}.example": queries.DomainAges(total=n, ages=[n, 0, 0, 0, 0, 0, 0])
        for n in range(20_000, 0, -1)  # the busiest first, as the spool orders them
    }
    stats = queries.StatsAnswer(
        by_state={},
        total=0,
        waiting=0,
        oldest=None,
        buckets=[],
        ages=[],
        by_domain=domains,
        frozen=False,
    )
    assert len(stats.model_dump_json()) > MAX_PAYLOAD
    msg: Any = Captured()
    await list_call([], max_payload=MAX_PAYLOAD)._send(msg, queries.STATS, stats)
    [data] = msg.sent
    assert len(data) <= MAX_PAYLOAD
    sent = json.loads(data)
    kept = list(sent["by_domain"])
    assert kept == list(domains)[: len(kept)]
    assert sent["domains_omitted"] == len(domains) - len(kept) > 0
