"""The scheduler: publish a delivery job for every message that is due.

The queue state in KV is the only source of truth: each tick reads it (through the live view's
indexes: what is due, what is out for delivery, what finished long enough ago), so nothing is
lost when any service restarts, and a tick costs what is due, not what is queued.
Dispatching is a compare-and-set of the record to `delivering` (with the attempt number), so
with several spool replicas a message is dispatched once. The job's `Nats-Msg-Id` is
`<id>.<attempt>`, so a repeated publish is dropped by JetStream.

Claiming and publishing are two steps, and a spool may die between them: the record says
`delivering` while no job exists, and no outcome will ever come. So the claim is a lease: it
sets the record's `lease_until` to a few seconds ahead (and clears `next_attempt`: there is
none while an attempt is out), and only once JetStream has acknowledged the job does a second
compare-and-set clear it. A record claimed before leases existed has none, and is left to the
`delivering_timeout`; so is one with no recipient left open (an operator deleted them
meanwhile), which has no job to publish. A record still `delivering` with its lease run out
is one whose publish nobody confirmed; any replica's next tick publishes its job again. That
is always safe: the job is the same, under the same `Nats-Msg-Id`, and the lease runs out
seconds after the claim, well inside the stream's duplicate window, so when the first publish
did arrive JetStream drops the second. Two replicas that both see the lease run out publish
one job between them and one of them clears the lease. What a tick costs for this is a look
at each record already in `delivering` (the view is in memory) and work only for those with a
lease run out; a dispatch costs one more KV write.

Publishing before claiming was the other way: no second write, but a job would then exist
for a record that may not be claimed (held or changed meanwhile), and delivery checks jobs
against the record they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from nats.js.kv import KeyValue

from empath.core import bodies as bodies_module
from empath.core import bus as bus_module
from empath.core import errors, events, flags, logs, names, periodic, queue, telemetry
from empath.core.settings import Settings
from empath.spool import records, removals, retries, view

log = logging.getLogger("empath.spool.scheduler")
_tracer = telemetry.tracer("empath.spool")

# How long a claim waits for its publish to be confirmed before any replica publishes again.
LEASE_SECONDS = 5.0


def claimed(entry: queue.Entry, now: datetime) -> queue.Entry | None:
    """The record claimed for its next attempt, or None when it is not due now."""
    if entry.state not in {queue.State.QUEUED, queue.State.DEFERRED} or entry.held:
        return None
    if entry.next_attempt is None or entry.next_attempt > now or not entry.has_open:
        return None
    return entry.model_copy(
        update={
            "state": queue.State.DELIVERING,
            "attempts": entry.attempts + 1,
            "next_attempt": None,
            "lease_until": now + timedelta(seconds=LEASE_SECONDS),
            "updated_at": now,
        }
    )


def lease_expired(entry: queue.Entry | view.Summary, now: datetime) -> bool:
    """Whether a record in `delivering` has a job whose publish nobody confirmed in time.

    Only within half the jobs stream's duplicate window of the claim: past that, a second
    publish might no longer be recognised as a copy, so such a record (a claim that stayed
    unconfirmed for an hour, or one written before claims had a lease) is left to the
    `delivering_timeout`, which retries it as a new attempt. So is a claim with no recipient
    left open: there is no job to publish for it.
    """
    if entry.state != queue.State.DELIVERING or entry.lease_until is None:
        return False
    claimed_at = entry.updated_at or entry.received_at
    return (
        entry.lease_until <= now
        and entry.has_open
        and (now - claimed_at).total_seconds() < names.JOBS_STREAM.duplicate_window_seconds / 2
    )


def _in_trace(entry: queue.Entry) -> contextlib.AbstractContextManager[object]:
    """A span for dispatching an attempt, a child of the message's arrival in its trace: the
    job's headers carry it, so the attempt joins the trace too. A dispatch on arrival runs in
    that arrival's context already (the record's `traceparent` is the current one): then it
    is not parsed back from the record (an extract per message saved)."""
    current = entry.traceparent is not None and entry.traceparent == telemetry.traceparent()
    return telemetry.span(
        _tracer,
        "spool.dispatch",
        parent=None if current else telemetry.resumed(entry.traceparent),
        attributes=lambda: {"empath.queue_id": entry.id, "empath.attempt": entry.attempts},
    )


def job_for(
    entry: queue.Entry, body: bytes | None = None, *, envelope: events.Envelope | None = None
) -> events.DeliveryJob:
    """The job for the entry's current attempt, for the recipients still open (with the body
    when the caller has it: a first attempt dispatched on arrival). `envelope`: the envelope
    `received` brought, for a first attempt (every recipient open: it is the record's own),
    instead of building it again from the record."""
    return events.DeliveryJob(
        id=entry.id,
        attempt=entry.attempts,
        body_key=entry.body_key,
        size=entry.size,
        envelope=entry.envelope() if envelope is None else envelope,
        metadata=entry.metadata,
        body=body,
    )


class Scheduler:
    def __init__(
        self,
        *,
        settings: Settings,
        records: records.Records,
        bus: bus_module.Bus,
        flag_store: KeyValue,
        live: view.QueueView,
        bodies: bodies_module.Bodies,
        removals: removals.Removals | None = None,
    ) -> None:
        self.settings = settings
        self.bodies = bodies
        self.records = records
        self.bus = bus
        self.flags = flag_store
        self.view = live
        self.removals = removals
        # Whether the queue is frozen, as the intake asks for every message: read at most twice
        # a second (a message dispatched on arrival just after a freeze is held back by
        # delivery, which reads the flag itself before every job), and at once after this
        # spool's own API changed it. The ticks read the flag itself.
        self.frozen_flag = flags.Cached(flag_store)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `scheduler_interval`, and at once whenever a record becomes due now (a
        message just recorded): a new message goes out without waiting for the next tick."""
        await periodic.every(
            self.settings.scheduler_interval,
            lambda: self.tick(datetime.now(UTC)),
            stop=stop,
            log=log,
            what="scheduler tick failed",
            wake=self.view.due_now,
        )

    async def tick(self, now: datetime) -> int:
        """Dispatch what is due; returns how many jobs were published.

        Its cost follows the work, not the queue: the view hands over the records due now,
        the records out for delivery and the finished records past retention, each from an
        index, so 100,000 messages waiting for tomorrow cost nothing here."""
        index = self.view.index
        cutoff = now - timedelta(seconds=self.settings.finished_retention)
        for gone in index.take_expired(cutoff):
            entry = gone.entry()
            if self.removals is not None and entry.body_seq is None:
                # Its body went when it finished; a removal lost to a crash goes now. (A body
                # only its event carried was never in the bucket.)
                self.removals.add(entry.body_key)
            await self.records.delete(gone.id)
        unconfirmed: list[queue.Entry] = []
        for out in index.in_delivery():
            if lease_expired(out, now):
                unconfirmed.append(out.entry())
            elif (now - (out.updated_at or out.received_at)).total_seconds() > (
                self.settings.delivering_timeout
            ):
                stuck = out.entry()
                try:
                    await self._requeue_stuck(stuck, now)
                except errors.EmpathError as error:
                    # (Its body could not be stored, say.) The next tick tries again; what
                    # is due meanwhile still goes out.
                    logs.for_message(log, stuck.id).warning(
                        "attempt %d timed out, not yet taken as deferred: %s",
                        stuck.attempts,
                        error,
                    )
        due = [] if await flags.is_frozen(self.flags) else index.take_due(now)
        limit = asyncio.Semaphore(self.settings.spool_concurrency)

        async def dispatch(entry: queue.Entry) -> int:
            async with limit:
                try:
                    return await self.dispatch(entry, now)
                except Exception:
                    index.again(entry)  # still due: the next tick tries again
                    raise

        async def republish(entry: queue.Entry) -> int:
            async with limit:
                return await self.republish(entry)

        return sum(
            await asyncio.gather(
                *(dispatch(entry) for entry in due), *(republish(entry) for entry in unconfirmed)
            )
        )

    async def dispatch(self, entry: queue.Entry, now: datetime) -> int:
        mlog = logs.for_message(log, entry.id)
        if not entry.has_open:
            return 0
        claim = await self.records.update(
            entry.id, lambda current: claimed(current, now), known=self.view.index.known(entry.id)
        )
        if claim is None:
            return 0  # another replica took it, or it changed
        before, after, _ = claim
        try:
            await self.publish(after)
        except errors.BusUnavailable:
            # Put it back as it was, due again shortly: never left claimed with no job.
            await self.records.update(
                entry.id,
                lambda current: (
                    before.model_copy(
                        update={
                            "next_attempt": now + timedelta(seconds=5),
                            "lease_until": None,
                            "updated_at": now,
                        }
                    )
                    if current.attempts == after.attempts
                    else None
                ),
            )
            raise
        mlog.info(
            "attempt %d dispatched for %d recipients", after.attempts, len(after.open_recipients)
        )
        return 1

    async def arrive(
        self,
        entry: queue.Entry,
        *,
        body: bytes | None,
        now: datetime,
        envelope: events.Envelope | None = None,
    ) -> bool:
        """Record a message just accepted, already claimed for its first attempt, and publish
        that attempt's job (carrying the body when `received` brought it): no tick to wait for,
        no second write, no read of the body from the bucket. A message that is not due yet, or
        arrives while the queue is frozen, is recorded as queued and left to the ticks.
        False when the message was recorded already (a repeated event). `envelope`: the
        `received` event's, which the entry was made from (the job's, not built again).

        A message that waits, whose body only its event carries, is stored in the bucket
        first (`empath.core.bodies`): one dispatched now never is, unless it has to wait."""
        claim = None if await self.frozen_flag() else claimed(entry, now)
        if claim is None:
            entry = await self.bodies.keep(entry, body)
        if not await self.records.create(claim or entry):
            return False
        if claim is None:
            return True
        try:
            await self.publish(claim, body=body, envelope=envelope)
        except errors.BusUnavailable as error:
            # Claimed with no job: its lease runs out and a tick publishes it again.
            logs.for_message(log, claim.id).warning(
                "attempt 1 recorded but its job not published (%s): it goes out when the "
                "claim's lease runs out",
                error,
            )
            return True
        logs.for_message(log, claim.id).info(
            "attempt 1 dispatched on arrival for %d recipients", len(claim.open_recipients)
        )
        return True

    async def publish(
        self,
        claim: queue.Entry,
        *,
        body: bytes | None = None,
        envelope: events.Envelope | None = None,
    ) -> None:
        """Publish the job of a claimed attempt, in the message's trace. The record keeps its
        lease: clearing it would cost a write per attempt, and an attempt whose outcome comes
        before the lease runs out (almost all of them) never needs it cleared. Past the lease,
        a tick publishes the job again, which JetStream drops as a copy, and then clears it.

        A message whose body only its event carries (`queue.Entry.body_seq`) gets its body in
        the job whatever the attempt: delivery would not find it in the bucket."""
        if body is None and claim.body_seq is not None:
            try:
                body = await self.bodies.carried(claim)
            except errors.NotFound as error:
                # Lost (it should not be): delivery then fails it for want of a body, and the
                # sender hears of it, rather than the message waiting for ever.
                logs.for_message(log, claim.id).error("body lost: %s", error)
        with _in_trace(claim):
            await self.bus.publish(
                names.JOBS_SUBJECT,
                job_for(claim, body, envelope=envelope),
                msg_id=f"{claim.id}.{claim.attempts}",
            )

    async def republish(self, entry: queue.Entry) -> int:
        """Publish again the job of a claim whose lease ran out with no outcome yet: its first
        publish may never have happened (its spool died, or NATS went away, in between), or the
        attempt is simply taking long; JetStream drops the copy if the first one did arrive.
        Then the lease is cleared, so this happens once per attempt."""
        if not entry.has_open:
            return 0  # nothing left to deliver: the delivering timeout settles it
        logs.for_message(log, entry.id).info(
            "attempt %d has no outcome after its lease: publishing its job again (a copy, if "
            "the first one arrived, is dropped)",
            entry.attempts,
        )
        await self.publish(entry)
        await self._confirm(entry)
        return 1

    async def _confirm(self, claim: queue.Entry) -> None:
        """Clear the lease of a claim whose job JetStream acknowledged. When this write fails,
        the lease runs out again and the job is published again, which JetStream drops."""

        def confirm(current: queue.Entry) -> queue.Entry | None:
            if not (
                current.state == queue.State.DELIVERING
                and current.attempts == claim.attempts
                and current.lease_until is not None
            ):
                return None  # the outcome is in already, or another replica confirmed it
            return current.model_copy(update={"lease_until": None})

        try:
            await self.records.update(claim.id, confirm)
        except errors.EmpathError as error:
            logs.for_message(log, claim.id).warning(
                "attempt %d published, but its lease could not be cleared (%s): it will be "
                "published again, and JetStream will drop the copy",
                claim.attempts,
                error,
            )

    async def _requeue_stuck(self, entry: queue.Entry, now: datetime) -> None:
        """An attempt that never reported back (it should not happen: jobs are redelivered
        until acked) is taken as deferred, so the message is tried again. It waits now, so
        its body goes to the bucket first if only its event carried it."""
        stored = (await self.bodies.keep(entry)) is not entry
        mlog = logs.for_message(log, entry.id)
        mlog.warning(
            "attempt %d reported nothing for %.0fs: trying again",
            entry.attempts,
            self.settings.delivering_timeout,
        )
        written = await self.records.update(
            entry.id,
            lambda current: (
                current.model_copy(
                    update={
                        "state": queue.State.DEFERRED,
                        "next_attempt": retries.next_attempt(
                            self.settings, attempts=current.attempts, now=now
                        ),
                        "last_reply": "451 4.4.0 Attempt timed out without a result",
                        "lease_until": None,
                        "updated_at": now,
                        **({"body_seq": None} if stored else {}),
                    }
                )
                if current.state == queue.State.DELIVERING and current.attempts == entry.attempts
                else None
            ),
        )
        if written is None and stored:
            # Its outcome came in meanwhile. Had that finished the message, its record never
            # heard of the copy just stored: it goes now, not with the orphans' sweep a week
            # later.
            try:
                current = await self.records.get(entry.id)
            except errors.NotFound:
                current = None
            if (current is None or (current.finished and current.body_seq is not None)) and (
                self.removals is not None
            ):
                self.removals.add(entry.body_key)
                mlog.info("attempt %d reported after all: its stored copy removed", entry.attempts)
