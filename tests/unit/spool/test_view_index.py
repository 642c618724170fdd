"""The view's indexes: what the scheduler takes from them, without walking the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from nats.js.kv import KeyValue

from empath.core import ids, names, queue
from empath.spool import view
from tests.unit.spool.samples import NOW, entry


def waiting_at(when: object, **fields: object) -> queue.Entry:
    return entry(id=ids.new_id(), state=queue.State.DEFERRED, next_attempt=when, **fields)


def test_only_the_records_due_now_are_taken_each_once() -> None:
    index = view.Index()
    due = [waiting_at(NOW - timedelta(seconds=s)) for s in (1, 2)]
    later = [waiting_at(NOW + timedelta(hours=1)) for _ in range(1000)]
    for e in due + later:
        index.apply(e.id, e)
    index.apply(due[0].id, due[0])  # the same record seen twice (a write that moved nothing)

    assert sorted(e.id for e in index.take_due(NOW)) == sorted(e.id for e in due)
    assert index.take_due(NOW) == []  # taken: not handed out again


def test_a_record_that_moved_on_is_not_taken_at_its_old_time() -> None:
    index = view.Index()
    first = waiting_at(NOW - timedelta(seconds=1))
    index.apply(first.id, first)
    index.apply(first.id, first.model_copy(update={"next_attempt": NOW + timedelta(minutes=5)}))
    held = waiting_at(NOW - timedelta(seconds=1), held=True)
    index.apply(held.id, held)
    claimed = first.model_copy(update={"state": queue.State.DELIVERING, "next_attempt": None})

    assert index.take_due(NOW) == []
    assert index.take_due(NOW + timedelta(minutes=5))[0].id == first.id
    index.apply(first.id, claimed)
    assert [out.entry() for out in index.in_delivery()] == [claimed]


def test_a_record_whose_dispatch_failed_goes_back_as_due() -> None:
    index = view.Index()
    due = waiting_at(NOW)
    index.apply(due.id, due)
    [taken] = index.take_due(NOW)
    index.again(taken)
    assert index.take_due(NOW) == [due]


def test_finished_records_are_taken_once_past_the_cutoff() -> None:
    index = view.Index()
    done = entry(id=ids.new_id(), state=queue.State.DELIVERED, updated_at=NOW)
    index.apply(done.id, done)
    assert index.take_expired(NOW - timedelta(seconds=1)) == []
    assert [gone.entry() for gone in index.take_expired(NOW)] == [done]
    index.apply(done.id, None)
    assert done.id not in index.entries


def test_the_heaps_are_rebuilt_when_stale_items_pile_up() -> None:
    index = view.Index()
    moving = waiting_at(NOW)
    for minutes in range(5000):
        index.apply(
            moving.id, moving.model_copy(update={"next_attempt": NOW + timedelta(minutes=minutes)})
        )
    assert len(index._due) < 1100
    assert [e.id for e in index.take_due(NOW + timedelta(days=30))] == [moving.id]


def test_a_record_due_now_wakes_the_scheduler() -> None:
    live = view.QueueView()
    live.apply("x", waiting_at(NOW + timedelta(days=365)))
    assert not live.due_now.is_set()
    fresh = waiting_at(NOW)
    live.apply(fresh.id, fresh)
    assert live.due_now.is_set()


def test_the_view_keeps_a_summary_and_gives_back_the_whole_record() -> None:
    live = view.QueueView()
    record = entry(
        "a@one.test",
        queue.RecipientState(address="b@Two.test.", status="delivered"),
        "c@one.test",
        id=ids.new_id(),
        state=queue.State.DEFERRED,
        next_attempt=NOW,
    )
    live.apply(record.id, record)
    summary = live.entries[record.id]
    assert summary.domains == ("one.test", "two.test")
    assert summary.open_domains == ("one.test",)
    assert summary.entry() == record


async def watched(live: view.QueueView, *records: tuple[str, bytes | None]) -> None:
    """Feed `live` what a KV watch of the queue brings: no current values, then these writes
    (None: a removal), as nats.py hands them over."""

    async def updates() -> AsyncIterator[KeyValue.Entry | None]:
        yield None  # the current values are all in: there were none
        for revision, (message_id, value) in enumerate(records, start=1):
            yield KeyValue.Entry(
                bucket=names.QUEUE_BUCKET,
                key=names.queue_key(message_id),
                value=value,
                revision=revision,
                delta=0,
                created=None,
                operation=None if value is not None else "PURGE",
            )

    await live._read(updates())  # type: ignore[arg-type]


async def test_a_write_of_the_spools_own_comes_back_from_the_watch_unparsed() -> None:
    live = view.QueueView()
    ours, theirs = waiting_at(NOW), waiting_at(NOW)
    data = ours.model_dump_json().encode()
    live.expect(ours.id, ours, data)
    await watched(live, (ours.id, data), (theirs.id, theirs.model_dump_json().encode()))
    assert live.index.known(ours.id) == (ours, 1)
    assert live.index.known(ours.id)[0] is ours  # type: ignore[index]
    assert live.index.known(theirs.id) == (theirs, 2)
    assert live.due_now.is_set()


async def test_the_view_follows_the_bucket_not_what_the_spool_meant_to_write() -> None:
    live = view.QueueView()
    meant = waiting_at(NOW)
    other = meant.model_copy(update={"state": queue.State.DELIVERING, "next_attempt": None})
    live.expect(meant.id, meant, meant.model_dump_json().encode())  # its CAS lost to `other`
    failed = waiting_at(NOW)
    live.expect(failed.id, failed, failed.model_dump_json().encode())
    live.forget(failed.id, failed.model_dump_json().encode())  # that write never happened
    await watched(live, (meant.id, other.model_dump_json().encode()), (failed.id, None))
    assert live.index.known(meant.id) == (other, 1)
    assert [out.entry() for out in live.index.in_delivery()] == [other]
    assert failed.id not in live.entries


def test_the_last_records_taken_in_are_given_back_without_reading_their_json() -> None:
    index = view.Index()
    records = [waiting_at(NOW) for _ in range(view.PARSED_KEPT + 1)]
    for revision, record in enumerate(records, start=1):
        index.apply(record.id, record, revision)
    assert index.known(records[-1].id) == (records[-1], len(records))
    assert index.known(records[-1].id)[0] is records[-1]  # type: ignore[index]
    oldest = index.known(records[0].id)  # past the bound: read back from its JSON
    assert oldest == (records[0], 1)
    assert oldest[0] is not records[0]  # type: ignore[index]
