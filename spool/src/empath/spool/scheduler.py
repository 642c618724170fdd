"""The scheduler: publish a delivery job for every message that is due.

The queue state in KV is the only source of truth: each tick reads it, so nothing is lost when
any service restarts. Dispatching is a compare-and-set of the record to `delivering` (with the
attempt number), so with several spool replicas a message is dispatched once. The job's
`Nats-Msg-Id` is `<id>.<attempt>`, so a repeated publish is dropped by JetStream.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from nats.js.kv import KeyValue

from empath.core import bus as bus_module
from empath.core import errors, events, flags, logs, names, periodic, queue
from empath.core.settings import Settings
from empath.spool import records, retries, view

log = logging.getLogger("empath.spool.scheduler")


def job_for(entry: queue.Entry) -> events.DeliveryJob:
    """The job for the entry's current attempt, for the recipients still open."""
    return events.DeliveryJob(
        id=entry.id,
        attempt=entry.attempts,
        body_key=entry.body_key,
        size=entry.size,
        envelope=entry.envelope(),
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
    ) -> None:
        self.settings = settings
        self.records = records
        self.bus = bus
        self.flags = flag_store
        self.view = live

    async def run(self, stop: asyncio.Event) -> None:
        await periodic.every(
            self.settings.scheduler_interval,
            lambda: self.tick(datetime.now(UTC)),
            stop=stop,
            log=log,
            what="scheduler tick failed",
        )

    async def tick(self, now: datetime) -> int:
        """Dispatch what is due; returns how many jobs were published."""
        frozen = await flags.is_frozen(self.flags)
        due: list[queue.Entry] = []
        for entry in list(self.view.entries.values()):
            if entry.finished:
                age = (now - (entry.updated_at or entry.received_at)).total_seconds()
                if age > self.settings.finished_retention:
                    await self.records.delete(entry.id)
            elif entry.state == queue.State.DELIVERING:
                since = (now - (entry.updated_at or entry.received_at)).total_seconds()
                if since > self.settings.delivering_timeout:
                    await self._requeue_stuck(entry, now)
            elif (
                not frozen
                and not entry.held
                and entry.state in {queue.State.QUEUED, queue.State.DEFERRED}
                and entry.next_attempt is not None
                and entry.next_attempt <= now
            ):
                due.append(entry)
        limit = asyncio.Semaphore(self.settings.spool_concurrency)

        async def dispatch(entry: queue.Entry) -> int:
            async with limit:
                return await self.dispatch(entry, now)

        return sum(await asyncio.gather(*(dispatch(entry) for entry in due)))

    async def dispatch(self, entry: queue.Entry, now: datetime) -> int:
        mlog = logs.for_message(log, entry.id)
        if not entry.open_recipients:
            return 0

        def claim(current: queue.Entry) -> queue.Entry | None:
            if current.state not in {queue.State.QUEUED, queue.State.DEFERRED} or current.held:
                return None
            if current.next_attempt is None or current.next_attempt > now:
                return None
            return current.model_copy(
                update={
                    "state": queue.State.DELIVERING,
                    "attempts": current.attempts + 1,
                    "updated_at": now,
                }
            )

        claimed = await self.records.update(entry.id, claim)
        if claimed is None:
            return 0  # another replica took it, or it changed
        before, after = claimed
        try:
            await self.bus.publish(
                names.JOBS_SUBJECT, job_for(after), msg_id=f"{after.id}.{after.attempts}"
            )
        except errors.BusUnavailable:
            # Put it back as it was, due again shortly: never left claimed with no job.
            await self.records.update(
                entry.id,
                lambda current: (
                    before.model_copy(
                        update={"next_attempt": now + timedelta(seconds=5), "updated_at": now}
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

    async def _requeue_stuck(self, entry: queue.Entry, now: datetime) -> None:
        """An attempt that never reported back (it should not happen: jobs are redelivered
        until acked) is taken as deferred, so the message is tried again."""
        logs.for_message(log, entry.id).warning(
            "attempt %d reported nothing for %.0fs: trying again",
            entry.attempts,
            self.settings.delivering_timeout,
        )
        await self.records.update(
            entry.id,
            lambda current: (
                current.model_copy(
                    update={
                        "state": queue.State.DEFERRED,
                        "next_attempt": retries.next_attempt(
                            self.settings, attempts=current.attempts, now=now
                        ),
                        "last_reply": "451 4.4.0 Attempt timed out without a result",
                        "updated_at": now,
                    }
                )
                if current.state == queue.State.DELIVERING and current.attempts == entry.attempts
                else None
            ),
        )
