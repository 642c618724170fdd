"""The per-domain circuit breaker, shared by every delivery worker: after `failures` connection
or session failures to a domain within `window` seconds, no worker connects to it for
`cooldown` seconds; then one message probes, and its outcome closes or reopens the circuit.

What counts as a failure: every MX host of the domain unreachable, or each session broken
before the transaction (refused or timed-out connection, 4xx greeting or EHLO, a dropped
session, the session deadline). Not: a remote that answers and refuses or defers recipients
(it is up and speaking for itself), DNS answers, permanent (5xx) session failures.

While the circuit is open the domain's recipients are deferred at once with a 4.4.1 reply that
says why and until when, without a connection: each is an attempt like any other (the retry
schedule and `max_attempts` apply), as Postfix does for a destination it marked dead. They
retry no sooner than they would have after a real failure, and the breaker only spares the
remote (and the worker's slots and time) the connections that would have failed the same way.
These attempts do not count as failures for the breaker itself.

The state is one record per domain in the limits bucket (`circuit.<domain>`), changed by
compare-and-set; each worker watches those records, so checking costs no round trip. A probe
is claimed by compare-and-set (one worker wins) with a lease of twice the connect timeout:
a worker that dies while probing leaves the next probe to another after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue
from opentelemetry import metrics as otel_metrics

from empath.core import names, telemetry
from empath.delivery import limits

log = logging.getLogger("empath.delivery.circuit")

STATES = {"closed": 0, "half-open": 1, "open": 2}


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to try the domain now; a probe reports its outcome as one."""

    go: bool
    probe: bool = False
    reply: str = ""


GO = Decision(go=True)


class Breakers:
    def __init__(
        self,
        records: limits.Records,
        *,
        failures: int,
        window: float,
        cooldown: float,
        probe_lease: float,
        me: str,
    ) -> None:
        self.records = records
        self.failures = failures
        self.window = window
        self.cooldown = cooldown
        self.probe_lease = probe_lease
        self.me = me
        self._watching: asyncio.Task[None] | None = None
        _ALL.add(self)

    def start(self) -> None:
        if self.failures:
            self._watching = asyncio.create_task(self._watch(), name="delivery-circuits")

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching

    async def _watch(self) -> None:
        """Keep every circuit record as it changes (the others' trips included)."""
        kv: KeyValue = self.records.kv
        while True:
            try:
                watcher = await kv.watch(f"{names.CIRCUIT_KEY_PREFIX}>")
                try:
                    async for entry in watcher:
                        if entry is None:
                            continue  # the end of the records that were there at start
                        deleted = entry.operation in ("DEL", "PURGE") or not entry.value
                        value = None if deleted else json.loads(entry.value)
                        self.records.saw(entry.key, entry.revision, value)
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, nats.js.errors.Error, OSError, ValueError) as error:
                log.warning("watching the circuit breakers failed, again in 1 s: %r", error)
            await asyncio.sleep(1.0)

    def state(self, domain: str) -> limits.Record | None:
        return self.records.cached(limits.key_of(names.CIRCUIT_KEY_PREFIX, domain))

    async def check(self, domain: str) -> Decision:
        """Go (closed), go as the probe (cool-down over, and this worker won the probe), or
        stay away with the reply for the recipients."""
        if not self.failures:
            return GO
        record = self.state(domain)
        if record is None or record.get("state", "closed") == "closed":
            return GO
        now = time.time()
        if now < float(record["until"]):
            return self._suspended(domain, record)
        won = False

        def claim(found: limits.Record) -> bool:
            nonlocal won
            won = found.get("state") in ("open", "half-open") and now >= float(found["until"])
            if won:
                found.update(state="half-open", prober=self.me, until=now + self.probe_lease)
            return won

        key = limits.key_of(names.CIRCUIT_KEY_PREFIX, domain)
        record = await self.records.change(key, claim, fresh=True)
        if won:
            _transitions.add(1, {"state": "half-open"})
            log.info("circuit of %s half-open: this worker probes with one message", domain)
            return Decision(go=True, probe=True)
        if record.get("state", "closed") == "closed":
            return GO
        return self._suspended(domain, record)

    def _suspended(self, domain: str, record: limits.Record) -> Decision:
        _suspended.add(1)
        if record["state"] == "half-open":
            why = "another attempt is probing it"
        else:
            until = datetime.fromtimestamp(float(record["until"]), UTC)
            why = f"until {until:%H:%M:%S} UTC"
        reply = (
            f"451 4.4.1 Delivery to {domain} is suspended, {why}, after "
            f"{len(record.get('failures', []))} failed connections: {record.get('reason', '')}"
        )
        return Decision(go=False, reply=reply)

    async def failed(self, domain: str, reply: str, *, probe: bool) -> None:
        """A connection or session failure to the domain (every MX host tried)."""
        if not self.failures:
            return
        now = time.time()
        opened = False

        def count(record: limits.Record) -> bool:
            nonlocal opened
            state = record.get("state", "closed")
            if state == "open" and not probe:
                return False  # a session that began before the trip: nothing changes
            record["domain"] = domain
            record["reason"] = reply[:300]
            recent = [t for t in record.get("failures", []) if t > now - self.window]
            record["failures"] = [*recent, now][-self.failures :]
            if state == "half-open" or len(record["failures"]) >= self.failures:
                opened = True
                record.update(state="open", until=now + self.cooldown, opened=now)
                record.pop("prober", None)
            else:
                record.setdefault("state", "closed")
            return True

        key = limits.key_of(names.CIRCUIT_KEY_PREFIX, domain)
        await self.records.change(key, count)
        if opened:
            _transitions.add(1, {"state": "open"})
            log.warning(
                "circuit of %s open for %g s after %d failed connections: %s",
                domain,
                self.cooldown,
                self.failures,
                reply,
            )

    async def succeeded(self, domain: str) -> None:
        """A session with the domain got to its transaction: the circuit closes (no write when
        it is closed with no failure counted: the common case costs nothing)."""
        if not self.failures:
            return
        record = self.state(domain)
        if record is None or (record.get("state") == "closed" and not record.get("failures")):
            return
        was = record.get("state")

        def close(found: limits.Record) -> bool:
            if found.get("state", "closed") == "closed" and not found.get("failures"):
                return False
            found.update(state="closed", failures=[], until=0)
            found.pop("prober", None)
            return True

        await self.records.change(limits.key_of(names.CIRCUIT_KEY_PREFIX, domain), close)
        if was != "closed":
            _transitions.add(1, {"state": "closed"})
            log.info("circuit of %s closed: a session succeeded", domain)

    def circuits(self) -> Iterator[limits.Record]:
        for key, (_, record) in list(self.records.seen.items()):
            if key.startswith(names.CIRCUIT_KEY_PREFIX) and "state" in record:
                yield record


_ALL: weakref.WeakSet[Breakers] = weakref.WeakSet()
_meter = telemetry.meter("empath")
_suspended = _meter.create_counter(
    "empath.delivery.circuit.suspended.total",
    description="Domain deliveries deferred without a connection: their circuit was open",
)
_transitions = _meter.create_counter(
    "empath.delivery.circuit.transitions.total",
    description="Circuit breaker state changes made by this worker",
)


def _states(options: otel_metrics.CallbackOptions) -> Iterator[otel_metrics.Observation]:
    """Each domain with a circuit record: 0 closed, 1 half-open, 2 open (the shared state, as
    this worker last saw it)."""
    seen: dict[str, int] = {}
    for breakers in list(_ALL):
        for record in breakers.circuits():
            seen[str(record.get("domain"))] = STATES.get(str(record["state"]), 0)
    for domain, value in seen.items():
        yield otel_metrics.Observation(value, {"domain": domain})


_meter.create_observable_gauge(
    "empath.delivery.circuit.state",
    callbacks=[_states],
    description="Per-domain circuit breaker: 0 closed, 1 half-open (probing), 2 open",
)
