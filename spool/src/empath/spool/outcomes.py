"""Attempt outcomes: delivered recipients are done, deferred ones wait for the next retry,
failed or expired ones are bounced; when no recipient is left the body is deleted.

Applying an outcome is a compare-and-set of the record, keyed by attempt number: a redelivered
`attempted` event finds its attempt already in the history and changes nothing. An outcome
that changes nothing is dropped with a line naming its queue id, never silently: at INFO for
a repeat (at-least-once delivery makes them routine), at WARNING for one that came too late.

Handling an event is a function of the event and the record, never of the wall clock: its
time is the attempt's `finished_at`. So an event handled again (its first handling published
a DSN, then could not write the record) makes the same decisions and the same DSN, under the
same queue id and body key: JetStream drops the repeated publish, and the bucket keeps one
body.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg

from empath.core import (
    addresses,
    bodies,
    consumers,
    errors,
    events,
    metrics,
    pluginevents,
    plugins,
    queue,
    store,
    telemetry,
)
from empath.core.settings import Settings
from empath.spool import dsn, notices, records, removals, retries, view

log = logging.getLogger("empath.spool.outcomes")
tracer = telemetry.tracer("empath.spool")

EXPIRED_STATUS = "4.4.7"
HISTORY_LIMIT = 50


def apply(
    settings: Settings, entry: queue.Entry, event: events.Attempted, *, now: datetime
) -> queue.Entry | None:
    """The record after this attempt, or None when the attempt is stale, already applied, or
    not the attempt the spool dispatched: an outcome counts only for a message `delivering`
    in exactly that attempt, so one forged or left over from an earlier attempt can mark
    nothing delivered (its message is tried again instead: a duplicate at worst, never a loss).
    """
    if already_recorded(entry, event) or not dispatched(entry, event):
        return None
    results = {r.address: r for r in event.results}
    updated = []
    for recipient in entry.recipients:
        result = results.get(recipient.address)
        if result is None or not recipient.open:
            updated.append(recipient)
            continue
        status = {
            "delivered": queue.RecipientStatus.DELIVERED,
            "deferred": queue.RecipientStatus.DEFERRED,
            "failed": queue.RecipientStatus.FAILED,
        }[result.outcome]
        updated.append(
            recipient.model_copy(
                update={"status": status, "last_reply": result.reply, "remote": result.remote}
            )
        )
    after = entry.model_copy(
        update={
            "recipients": tuple(updated),
            "history": (
                *entry.history,
                queue.AttemptRecord(
                    attempt=event.attempt,
                    started_at=event.started_at,
                    finished_at=event.finished_at,
                    worker=event.worker,
                    results=event.results,
                ),
            )[-HISTORY_LIMIT:],
            "lease_until": None,
            "updated_at": now,
        }
    )
    open_now = after.open_recipients
    if open_now:
        why = retries.expired(settings, after, now=now)
        if why is not None:  # give up: the deferred recipients fail for good
            after = after.model_copy(
                update={
                    "recipients": tuple(
                        r.model_copy(
                            update={
                                "status": queue.RecipientStatus.FAILED,
                                "last_reply": f"{r.last_reply or '451 4.4.7'} ({why})",
                            }
                        )
                        if r.open
                        else r
                        for r in after.recipients
                    )
                }
            )
            open_now = []
    replies = [r.last_reply for r in after.recipients if r.status != "delivered" and r.last_reply]
    changes: dict[str, object] = {"last_reply": replies[0] if replies else None}
    if open_now:
        changes["state"] = queue.State.FROZEN if after.held else queue.State.DEFERRED
        changes["next_attempt"] = retries.next_attempt(settings, attempts=after.attempts, now=now)
    else:
        all_delivered = all(r.status == "delivered" for r in after.recipients)
        changes["state"] = queue.State.DELIVERED if all_delivered else queue.State.FAILED
        changes["next_attempt"] = None
    return after.model_copy(update=changes)


def dispatched(entry: queue.Entry, event: events.Attempted) -> bool:
    """Whether `event` reports the attempt the message is out on now (the scheduler counts
    an attempt when it dispatches it, and leaves the message `delivering` until its outcome)."""
    return entry.state == queue.State.DELIVERING and event.attempt == entry.attempts


def already_recorded(entry: queue.Entry, event: events.Attempted) -> bool:
    """Whether this attempt's outcome is in the record already (a repeated event)."""
    return any(past.attempt == event.attempt for past in entry.history)


def time_of(event: events.Attempted) -> datetime:
    """The time an outcome is handled at: when its attempt finished (UTC if not given)."""
    finished = event.finished_at
    return finished if finished.tzinfo is not None else finished.replace(tzinfo=UTC)


def reports_for(
    before: queue.Entry,
    after: queue.Entry,
    event: events.Attempted,
    *,
    settings: Settings,
    now: datetime,
) -> dict[str, list[dsn.Report]]:
    """The DSNs this change calls for, by kind."""
    results = {r.address: r for r in event.results}
    kinds: dict[str, list[dsn.Report]] = {"failure": [], "success": [], "delay": []}
    for old, new in zip(before.recipients, after.recipients, strict=True):
        result = results.get(new.address)
        remote = new.remote
        if old.open and new.status == "failed" and dsn.wanted(new, "failure"):
            status = dsn.status_of(new.last_reply, default="5.0.0")
            if status.startswith("4"):
                status = EXPIRED_STATUS
            kinds["failure"].append(dsn.Report(new, status, new.last_reply, remote))
        elif (
            old.open
            and new.status == "delivered"
            and dsn.wanted(new, "success")
            and result is not None
            and not result.dsn
        ):
            kinds["success"].append(dsn.Report(new, "2.0.0", new.last_reply, remote))
        elif (
            new.status == "deferred"
            and dsn.wanted(new, "delay")
            and "delay" not in new.notified
            and (now - after.received_at).total_seconds() >= settings.delay_warning_after
        ):
            kinds["delay"].append(
                dsn.Report(
                    new, dsn.status_of(new.last_reply, default="4.0.0"), new.last_reply, remote
                )
            )
    return {kind: reports for kind, reports in kinds.items() if reports}


def mark_notified(entry: queue.Entry, addresses: set[str], kind: str) -> queue.Entry:
    """Remember that a DSN of `kind` went out for these recipients (so it goes out once)."""
    if not addresses:
        return entry
    return entry.model_copy(
        update={
            "recipients": tuple(
                r.model_copy(update={"notified": (*r.notified, kind)})
                if r.address in addresses and kind not in r.notified
                else r
                for r in entry.recipients
            )
        }
    )


# How soon after its arrival a message's first attempt may find its body gone because ingress
# removed it (well past ingress's DATA deadline and publish timeout).
VOID_WINDOW = timedelta(minutes=10)


def void(entry: queue.Entry, event: events.Attempted, *, now: datetime) -> bool:
    """Whether this outcome may be of a message ingress never confirmed: its first attempt,
    just after it arrived, found no body. Ingress removes a body only when it answered 451
    for it (the event's publish was not confirmed, but reached JetStream all the same), and
    leaves a marker when it does; the caller looks for the marker before dropping anything
    (an outcome is no proof). A body lost any other way bounces with a DSN that says so."""
    return (
        event.attempt == 1
        and entry.state == queue.State.DELIVERING
        and entry.attempts == 1
        and now - entry.received_at < VOID_WINDOW
        and bool(event.results)
        and all(r.outcome == "failed" and r.reply == events.BODY_MISSING for r in event.results)
    )


def plugin_events(entry: queue.Entry, event: events.Attempted) -> list[plugins.Event]:
    """The event hooks' events of an applied outcome: each recipient's `delivered`,
    `deferred` or `failed` as the record now says (a deferral that ran out of attempts or time
    is `failed`), with the message's metadata. (`delivery_attempt` is delivery's to tell.)"""
    status = {r.address: r for r in entry.recipients}
    found: list[plugins.Event] = []
    for result in event.results:
        recipient = status.get(result.address)
        if recipient is None or recipient.status == queue.RecipientStatus.PENDING:
            continue
        found.append(
            plugins.Event(
                event=recipient.status.value,
                at=event.finished_at,
                service="spool",
                id=entry.id,
                sender=entry.sender,
                recipients=(result.address,),
                metadata=entry.metadata,
                delivery=plugins.Delivery(
                    domain=addresses.domain_of(result.address),
                    server=result.remote,
                    reply=recipient.last_reply,
                    attempt=event.attempt,
                    recipient=result.address,
                ),
            )
        )
    return found


def plugin_event_id(event: plugins.Event, attempt: int) -> str:
    """The same `Nats-Msg-Id` for the same recipient's event of the same attempt."""
    key = f"{event.id}\n{attempt}\n{','.join(event.recipients)}\n{event.event}"
    return "spool-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class Outcomes:
    def __init__(
        self,
        *,
        settings: Settings,
        records: records.Records,
        bodies: bodies.Bodies,
        removals: removals.Removals,
        notices: notices.Notices,
        plugin_events: pluginevents.Publisher | None = None,
        live: view.QueueView | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.live = live
        self.bodies = bodies
        self.removals = removals
        self.notices = notices
        self.plugin_events = plugin_events

    async def _current(self, event: events.Attempted) -> records.Known:
        """The record the outcome applies to: the live view's copy when it shows the message
        out on exactly this attempt (the usual case: no read), else read from the bucket. A copy
        that is behind costs nothing wrong: the write is a compare-and-set, which then reads."""
        seen = None if self.live is None else self.live.index.known(event.id)
        if seen is not None:
            entry, _ = seen
            if entry.state == queue.State.DELIVERING and entry.attempts == event.attempt:
                return seen
        return await self.records.read(event.id)

    def _emit(self, entry: queue.Entry, event: events.Attempted) -> None:
        if self.plugin_events is None or not self.plugin_events.wanted:
            return
        for plugin_event in plugin_events(entry, event):
            self.plugin_events.emit(
                plugin_event, msg_id=plugin_event_id(plugin_event, event.attempt)
            )

    async def handle(self, msg: Msg) -> None:
        with consumers.receive(
            msg, events.Attempted, log=log, tracer=tracer, span="spool.outcome"
        ) as inbound:
            event, mlog = inbound.event, inbound.log
            now = time_of(event)
            try:
                before, revision = await self._current(event)
            except errors.NotFound:
                mlog.warning("outcome of attempt %d for a message no longer queued", event.attempt)
                return
            marker = store.void_key(before.body_key)
            if void(before, event, now=now) and await self.bodies.objects.exists(marker):
                mlog.warning(
                    "body %s was removed by ingress: it never confirmed this message (its "
                    "client was answered 451 and sends it again); dropping it",
                    before.body_key,
                )
                await self.records.delete(event.id)
                self.removals.add(marker)
                return
            after = apply(self.settings, before, event, now=now)
            if after is None:
                if already_recorded(before, event):
                    mlog.info("outcome of attempt %d dropped: already recorded", event.attempt)
                    if before.attempts == event.attempt:
                        # A spool that died after the record but before its plugin events
                        # were out: they go now (the same ids: JetStream keeps one of each).
                        self._emit(before, event)
                else:
                    metrics.outcomes_refused.add(1)
                    mlog.warning(
                        "outcome of attempt %d refused: the message is %s at attempt %d",
                        event.attempt,
                        before.state.value,
                        before.attempts,
                    )
                return
            # DSNs first (their ids are deterministic, so a retry re-sends nothing new), then
            # the record: a crash in between repeats the DSN publish, never loses it.
            kinds = reports_for(before, after, event, settings=self.settings, now=now)
            for kind, reports in kinds.items():
                await self.notices.send(
                    kind=kind,
                    entry=before,
                    reports=reports,
                    cause=f"attempt-{event.attempt}",
                    now=now,
                )
            delayed = {r.recipient.address for r in kinds.get("delay", [])}
            # It has to wait: a body only its event carried goes to the bucket first (the
            # stream keeps events a week, a message may wait longer).
            stored = not after.finished and (await self.bodies.keep(before)) is not before

            def change(current: queue.Entry) -> queue.Entry | None:
                # Someone else wrote in between: recompute from what is there now.
                updated = (
                    after if current == before else apply(self.settings, current, event, now=now)
                )
                if updated is None:
                    return None
                if stored:
                    updated = updated.model_copy(update={"body_seq": None})
                return mark_notified(updated, delayed, "delay")

            written = await self.records.update(event.id, change, known=(before, revision))
            if written is None:
                mlog.info(
                    "outcome of attempt %d dropped: applied meanwhile elsewhere", event.attempt
                )
                return
            result = written.after
            self._emit(result, event)
            for r in event.results:
                mlog.info(
                    "to=<%s> %s attempt=%d remote=%s tls=%s reply=%s",
                    r.address,
                    r.outcome,
                    event.attempt,
                    r.remote,
                    r.tls,
                    r.reply,
                )
            if result.finished and result.body_seq is None:
                self.removals.add(result.body_key)
                mlog.info("%s: body to be removed", result.state.value)
            elif result.finished:
                mlog.info("%s: its body was never in the bucket", result.state.value)
