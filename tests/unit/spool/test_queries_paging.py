"""Paging through the queue: `records.page_of` and the list call's sorting and filters."""

from __future__ import annotations

from datetime import UTC, datetime

from empath.core import queries, queue
from empath.spool import records
from tests.unit.spool.listing import entry, list_call

ENTRIES = [entry(minute) for minute in range(5)]  # oldest first, as the view gives them


def test_a_page_holds_at_most_limit_entries_and_says_where_to_go_on() -> None:
    page = records.page_of(ENTRIES, limit=2)
    assert page.items == ENTRIES[:2]
    assert page.next_after == ENTRIES[1].id


def test_after_pages_on_past_the_id_given_until_nothing_is_left() -> None:
    seen: list[queue.Entry] = []
    after = None
    while True:
        page = records.page_of(ENTRIES, limit=2, after=after)
        seen += page.items
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ENTRIES


def test_a_last_page_that_is_exactly_full_says_there_is_no_more() -> None:
    page = records.page_of(ENTRIES, limit=5)
    assert (page.items, page.next_after) == (ENTRIES, None)


def test_the_state_filter_applies_before_the_limit() -> None:
    mixed = [
        entry(0, state=queue.State.DEFERRED),
        entry(1),
        entry(2, state=queue.State.DEFERRED),
        entry(3, state=queue.State.DEFERRED),
    ]
    page = records.page_of(mixed, state=queue.State.DEFERRED, limit=2)
    assert page.items == [mixed[0], mixed[2]]
    assert page.next_after == mixed[2].id
    rest = records.page_of(mixed, state=queue.State.DEFERRED, limit=2, after=page.next_after)
    assert (rest.items, rest.next_after) == ([mixed[3]], None)


def test_an_empty_queue_is_one_empty_page() -> None:
    assert records.page_of([], limit=10) == records.Page(items=[], next_after=None)


async def test_newest_first_pages_on_to_older_messages() -> None:
    query = list_call(list(reversed(ENTRIES)))  # the view's own order does not matter
    first = await query._list(queries.ListRequest(sort="-age", limit=2))
    assert first.items == [ENTRIES[4], ENTRIES[3]]
    assert first.next_after == ENTRIES[3].id
    second = await query._list(queries.ListRequest(sort="-age", limit=2, after=first.next_after))
    assert second.items == [ENTRIES[2], ENTRIES[1]]


async def test_the_list_filters_by_domain_sender_and_age() -> None:
    now = datetime.now(UTC)
    old = entry(0, sender="Boss@One.test", to="u@Other.TEST")
    fresh = entry(0, sender="a@two.test").model_copy(update={"received_at": now})
    query = list_call([old, fresh])
    by_domain = await query._list(queries.ListRequest(domain="other.test"))
    assert by_domain.items == [old]
    by_sender = await query._list(queries.ListRequest(sender="boss@"))
    assert by_sender.items == [old]
    by_age = await query._list(queries.ListRequest(min_age=3600))
    assert by_age.items == [old]
