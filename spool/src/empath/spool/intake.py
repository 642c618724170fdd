"""Intake: every `received` event becomes a `queued` record in the queue state.

An event that is not recorded is dropped with a line naming its queue id, so nothing leaves
the spool's intake without a trace: an INFO line when the message is recorded already (a
repeat, routine with at-least-once delivery).

An event is recorded only if it is authentic: signed by ingress, or by this spool (its DSNs),
with a key it trusts (`empath.core.signing`). Any other is refused before it is even decoded:
logged, counted (`empath.spool.received.refused.total`) and dropped, and its body is left
alone (a forged event may well name another message's body). A signed event that JetStream
stored more than `EMPATH_EVENT_MAX_DELAY` after its `received_at` is refused the same way
(reason `stale`): a replay of an event captured earlier, once NATS's duplicate window is over.

Upgrading from a version without signing: ingress pods not yet upgraded publish unsigned events
until they are replaced. The first spool that starts with signing
writes a time into the flags bucket (`names.UNSIGNED_UNTIL_FLAG`, once for the installation):
`EMPATH_EVENT_UNSIGNED_GRACE` from then when the last event in the `received` stream carries no
signature (an old ingress is publishing), otherwise none. Until that time an event with no
signature at all is still queued if JetStream stored it before then (the stream's own
timestamp, which no publisher sets), with a line naming it. A new installation, or one whose
ingress signs already, never takes an unsigned event; a bad signature or an unknown key is
never taken.

The body is not looked up here. An event whose body is gone exists when ingress could not
confirm its publish, removed the body and answered 451 while the event did reach JetStream;
that is rare, and a look at the bucket for every message to catch it cost a request per
message. Such a message is found at its first attempt instead (`outcomes.void`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from empath.core import bus, consumers, events, metrics, names, queue, signing, telemetry
from empath.spool import scheduler

log = logging.getLogger("empath.spool.intake")
tracer = telemetry.tracer("empath.spool")


class Intake:
    """A message due now goes out for its first attempt on arrival (`Scheduler.arrive`); one
    that is not is recorded as queued, for the scheduler's ticks."""

    def __init__(
        self,
        *,
        dispatcher: scheduler.Scheduler,
        verifier: signing.Verifier | None = None,
        unsigned_until: datetime | None = None,
        max_delay: float = 900.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.verifier = verifier  # None: signing is off, every event is taken
        # Unsigned events JetStream stored before this are still taken (`unsigned_window`).
        self.unsigned_until = unsigned_until
        # A signed event JetStream stored longer than this after its `received_at` is a replay.
        self.max_delay = timedelta(seconds=max_delay)

    async def handle(self, msg: Msg) -> None:
        """Record one accepted message; safe to run twice (and on two replicas) for one event."""
        if self.verifier is not None:
            try:
                self.verifier.verify(names.RECEIVED_SUBJECT, msg.data, msg.headers)
            except signing.Unauthentic as error:
                if self._before_signing(msg, error):
                    log.warning(
                        "received event taken unsigned: stored at %s, before signing began "
                        "(an ingress not yet upgraded; stream sequence %s)",
                        msg.metadata.timestamp.isoformat(),
                        _sequence(msg),
                    )
                    await self._record(msg, signed=False)
                    return
                metrics.received_refused.add(1, {"reason": error.reason})
                log.warning(
                    "received event refused, not queued: %s (stream sequence %s, msg id %s)",
                    error,
                    _sequence(msg),
                    (msg.headers or {}).get("Nats-Msg-Id", "")[:100],
                )
                return
        await self._record(msg, signed=self.verifier is not None)

    def _before_signing(self, msg: Msg, error: signing.Unauthentic) -> bool:
        if error.reason != "missing" or self.unsigned_until is None:
            return False
        stored = _stored_at(msg)
        return stored is not None and stored < self.unsigned_until

    async def _record(self, msg: Msg, *, signed: bool) -> None:
        with consumers.receive(
            msg, events.Received, log=log, tracer=tracer, span="spool.intake"
        ) as inbound:
            event, mlog = inbound.event, inbound.log
            if signed and (delay := _stored_after(msg, event)) > self.max_delay:
                metrics.received_refused.add(1, {"reason": "stale"})
                mlog.warning(
                    "received event refused, not queued: stored %d s after it was received "
                    "(a replay of an old event; stream sequence %s)",
                    delay.total_seconds(),
                    _sequence(msg),
                )
                return
            sequence = _sequence(msg)
            entry = queue.Entry.from_received(
                event, traceparent=telemetry.traceparent(), sequence=sequence
            )
            if not event.stored and sequence is None and event.body is not None:
                # Not from the stream, so no sequence to find the body by: it is stored now.
                await self.dispatcher.bodies.objects.put(entry.body_key, event.body)
            recorded = await self.dispatcher.arrive(
                entry, body=event.body, now=datetime.now(UTC), envelope=event.envelope
            )
            if recorded:
                mlog.info(
                    "queued from=<%s> nrcpt=%d size=%d",
                    event.envelope.sender,
                    len(event.envelope.recipients),
                    event.size,
                )
            else:
                # A redelivered event (or one two replicas both took): the first one counts.
                mlog.info("already recorded: dropping the repeated received event")


async def unsigned_window(connection: bus.Bus, flags: KeyValue, *, grace: float) -> datetime:
    """Until when unsigned events are taken: the time written by the first spool that started
    with signing, or now written by this one: `grace` from now when the last event in the
    `received` stream is unsigned (an ingress of a version without signing), else never."""
    try:
        return _parse_time((await flags.get(names.UNSIGNED_UNTIL_FLAG)).value)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        pass
    now = datetime.now(UTC)
    until = now + timedelta(seconds=grace) if grace and await _last_unsigned(connection) else NEVER
    try:
        await flags.create(names.UNSIGNED_UNTIL_FLAG, until.isoformat().encode())
    except nats.js.errors.KeyWrongLastSequenceError:  # another replica wrote it first
        return _parse_time((await flags.get(names.UNSIGNED_UNTIL_FLAG)).value)
    if until > now:
        log.warning(
            "signing begins while ingress publishes unsigned received events: those JetStream "
            "stores before %s are still queued (EMPATH_EVENT_UNSIGNED_GRACE)",
            until.isoformat(),
        )
    return until


# Before any event: no unsigned event is taken.
NEVER = datetime.min.replace(tzinfo=UTC)


async def _last_unsigned(connection: bus.Bus) -> bool:
    try:
        last = await connection.js.get_last_msg(names.RECEIVED_STREAM.name, names.RECEIVED_SUBJECT)
    except nats.js.errors.NotFoundError:  # a new installation: nothing published yet
        return False
    return signing.HEADER not in (last.headers or {})


def _parse_time(value: bytes | None) -> datetime:
    try:
        parsed = datetime.fromisoformat((value or b"").decode())
    except (UnicodeDecodeError, ValueError):
        # Not ours (the bucket is the spool's and control's): take nothing unsigned.
        return NEVER
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def caught_up(connection: bus.Bus) -> bool:
    """Whether the intake has taken every `received` event there is: none waiting for it,
    none delivered and not yet acknowledged (so no event can still name a body)."""
    info = await connection.js.consumer_info(
        names.RECEIVED_STREAM.name, names.SPOOL_RECEIVED_CONSUMER
    )
    return not info.num_pending and not info.num_ack_pending


def _stored_at(msg: Msg) -> datetime | None:
    """When JetStream stored the event (its own clock); None for a message not from it."""
    try:
        return msg.metadata.timestamp
    except (AttributeError, ValueError):
        return None


def _stored_after(msg: Msg, event: events.Received) -> timedelta:
    """How long after ingress received it JetStream stored the event."""
    stored = _stored_at(msg)
    return timedelta(0) if stored is None else stored - event.received_at


def _sequence(msg: Msg) -> int | None:
    try:
        return msg.metadata.sequence.stream
    except (AttributeError, ValueError):
        return None
