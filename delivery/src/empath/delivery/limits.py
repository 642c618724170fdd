"""Per-destination limits held across every delivery worker of an installation: deliveries in
progress at once per domain, and messages per second where a rate is configured.

Design. The workers share nothing but NATS, so the limits live in one KV bucket
(`names.LIMITS_BUCKET`), changed only by compare-and-set (a write names the revision it read).

- Sessions: the record `slots.<domain>` holds, per worker, how many of the domain's slots it
  has leased and until when. A worker leases slots in blocks as its deliveries need them and
  keeps them while it uses them, so a busy domain costs no round trip per message: only a
  worker's first slot, growth, the give-back of slots unused for LINGER ticks (5 s), and a
  renewal every half lease. A worker that dies stops renewing; its lease runs out within
  `delivery_limits_lease` seconds and the others may take its slots. A worker that cannot get
  a slot records that it wants some; the holders then keep no more than a fair share (the limit
  divided among the workers that hold or want slots) and give back the rest as it frees up.
- Rates: the record `rate.<domain>` holds the next free send time. A worker reserves the send
  times of a few messages at once (a fifth of a second's worth) and spaces its sends on them;
  a reserved time it did not use in time is dropped, never spent later in a burst.
- Times in the records are wall-clock seconds: the workers' clocks must agree to within a
  fraction of the lease (NTP does).

If NATS cannot be reached the limit cannot be checked: the attempt fails with a temporary
error and is deferred like any other (`worker.deliver_safely`).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from empath.core import errors, ids, metrics, periodic
from empath.core.settings import Settings

log = logging.getLogger("empath.delivery.limits")

Record = dict[str, Any]
_KEY_SAFE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*$")
# How often held slots are renewed, given back or rebalanced.
TICK = 1.0
# Ticks a worker keeps slots it does not use (while nobody else wants them): a domain that gets
# a message every few seconds costs no lease and give-back each time.
LINGER = 5


class LimitsUnavailable(errors.TemporaryError):
    """The shared limits could not be read or changed (NATS away, or endless conflicts)."""


def key_of(prefix: str, domain: str) -> str:
    """The KV key of a domain's record; a domain that is no valid key is encoded."""
    if _KEY_SAFE.match(domain):
        return f"{prefix}{domain}"
    return f"{prefix}={base64.urlsafe_b64encode(domain.encode()).decode().rstrip('=')}"


def worker_id() -> str:
    """This worker's name in the records: the instance, made unique per service start (two
    workers may run in one process)."""
    return f"{ids.INSTANCE_KEY}-{secrets.token_hex(3)}"


class Records:
    """Records in the limits bucket, each changed by compare-and-set; the last revision seen of
    each is kept, so a change usually costs one round trip (a second one after a conflict)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.seen: dict[str, tuple[int | None, Record]] = {}
        self.writes = 0
        self.reads = 0

    def cached(self, key: str) -> Record | None:
        found = self.seen.get(key)
        return None if found is None else found[1]

    def saw(self, key: str, revision: int, value: Record | None) -> None:
        """A newer revision learnt elsewhere (a watch): kept unless an older one."""
        known = self.seen.get(key)
        if known is not None and known[0] is not None and known[0] >= revision:
            return
        if value is None:
            self.seen.pop(key, None)
        else:
            self.seen[key] = (revision, value)

    async def read(self, key: str) -> tuple[int | None, Record]:
        self.reads += 1
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None, {}
        except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
            raise LimitsUnavailable(f"cannot read {key}: {error!r}") from error
        return entry.revision, json.loads(entry.value) if entry.value else {}

    async def change(
        self, key: str, mutate: Callable[[Record], bool], *, fresh: bool = False
    ) -> Record:
        """Apply `mutate` (which says whether it changed anything) under compare-and-set,
        read again and retried after a conflict; the record as written (or as found)."""
        known = None if fresh else self.seen.get(key)
        for _ in range(50):
            if known is None:
                known = await self.read(key)
            revision, found = known
            value = copy.deepcopy(found)
            if not mutate(value):
                self.seen[key] = known
                return value
            data = json.dumps(value, separators=(",", ":")).encode()
            self.writes += 1
            try:
                if revision is None:
                    written = await self.kv.create(key, data)
                else:
                    written = await self.kv.update(key, data, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                known = None
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
                self.seen.pop(key, None)
                raise LimitsUnavailable(f"cannot change {key}: {error!r}") from error
            self.seen[key] = (written, value)
            return value
        raise LimitsUnavailable(f"{key} kept changing under this worker")


@dataclass(slots=True)
class _Slots:
    """One domain's slots in this worker."""

    domain: str
    limit: int
    held: int = 0
    busy: int = 0
    peak: int = 0  # most busy since the last tick
    # The peaks of the last ticks: slots unused for LINGER ticks go back.
    peaks: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=LINGER))
    fair: int = 0  # when others want slots: the most this worker keeps (0: no one waits)
    until: float = 0.0  # our lease as last written
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    grower: asyncio.Task[None] | None = None
    flushing: asyncio.Task[None] | None = None


class Shared:
    """Sessions and rates per domain, shared by all workers (see the module's docstring).

    Has the interface of `throttle.Throttle`: `slot(domain)` and `pace(domain)`."""

    def __init__(self, kv: KeyValue, *, settings: Settings, me: str | None = None) -> None:
        self.records = Records(kv)
        self.settings = settings
        self.me = me or worker_id()
        self.lease = settings.delivery_limits_lease
        self._slots: dict[str, _Slots] = {}
        self._times: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._pacing: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._stop = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = asyncio.create_task(
            periodic.every(
                min(TICK, self.lease / 4),
                self._tick,
                stop=self._stop,
                log=log,
                what="renewing the shared delivery limits",
                wait_first=True,
                warn_once=True,
            ),
            name="delivery-limits",
        )

    async def close(self) -> None:
        """Give back every slot still held (a worker killed instead lets its lease run out)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        held = []
        for slots in self._slots.values():
            for task in (slots.grower, slots.flushing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if slots.held:
                slots.held = 0
                held.append(self._write(slots))
        # All at once, and not for long: with NATS away the leases run out by themselves.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await asyncio.gather(*held, return_exceptions=True)

    # -- sessions --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        """Hold one of the domain's slots for a delivery in progress."""
        await self.acquire(domain)
        try:
            yield
        finally:
            self.release(domain)

    def _domain(self, domain: str) -> _Slots:
        slots = self._slots.get(domain)
        if slots is None:
            slots = self._slots[domain] = _Slots(
                domain=domain, limit=self.settings.delivery_destination_concurrency
            )
        return slots

    async def acquire(self, domain: str) -> None:
        slots = self._domain(domain)
        if slots.busy < slots.held and not slots.waiters:
            self._take(slots)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append(waiter)
        if slots.grower is None or slots.grower.done():
            slots.grower = asyncio.create_task(self._grow(slots), name=f"slots-{domain}")
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(domain)  # granted just as it was cancelled
            else:
                with contextlib.suppress(ValueError):
                    slots.waiters.remove(waiter)
            raise

    def _take(self, slots: _Slots) -> None:
        slots.busy += 1
        slots.peak = max(slots.peak, slots.busy)

    def release(self, domain: str) -> None:
        slots = self._slots[domain]
        slots.busy -= 1
        if slots.fair and slots.held > max(slots.fair, slots.busy):
            # Others wait for this domain and this worker holds more than its share.
            slots.held -= 1
            self._flush(slots)
            return
        self._hand_out(slots)

    def _hand_out(self, slots: _Slots) -> None:
        while slots.waiters and slots.busy < slots.held:
            waiter = slots.waiters.popleft()
            if waiter.done():
                continue
            self._take(slots)
            waiter.set_result(None)

    def _pending(self, slots: _Slots) -> int:
        return sum(1 for waiter in slots.waiters if not waiter.done())

    async def _grow(self, slots: _Slots) -> None:
        """Lease more slots while local deliveries wait for them (polling while none is free:
        the holders give theirs back within a tick)."""
        pause = 0.02
        try:
            while True:
                self._hand_out(slots)
                need = self._pending(slots)
                if not need:
                    break
                await self._write(slots, need=need, fresh=pause > 0.02)
                self._hand_out(slots)
                if held_back := self._pending(slots):
                    if pause == 0.02:  # counted once per wait, not per poll
                        metrics.delivery_rate_limited.add(held_back, {"limit": "connections"})
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.25)
        except LimitsUnavailable as error:
            for waiter in slots.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            slots.waiters.clear()

    def _flush(self, slots: _Slots) -> None:
        """Write this worker's holding soon (one write for several give-backs)."""
        if slots.flushing is None or slots.flushing.done():
            slots.flushing = asyncio.create_task(self._flush_now(slots))

    async def _flush_now(self, slots: _Slots) -> None:
        await asyncio.sleep(0)
        try:
            await self._write(slots)
        except LimitsUnavailable as error:
            log.warning("cannot give back slots of %s: %s", slots.domain, error)

    async def _write(self, slots: _Slots, *, need: int = 0, fresh: bool = False) -> None:
        """Record this worker's holding of the domain's slots (taking up to `need` more where
        the limit and the fair share allow) and learn what the others hold and want.

        `mutate` may run more than once (after a conflict): it only computes; the local
        counts change after the write, so the record never says less than is in use."""
        now = time.time()
        outcome = {"grant": 0, "fair": 0}

        def mutate(record: Record) -> bool:
            changed = _prune(record, now)
            holders: dict[str, dict[str, float]] = record.setdefault("holders", {})
            record["domain"] = slots.domain
            mine = holders.get(self.me, {"held": 0, "want": 0, "until": 0.0})
            # What the record says of this worker may be stale (the lease ran out and it was
            # pruned, or a write of ours was lost): the local count is the truth.
            others = [v for k, v in holders.items() if k != self.me]
            taken = sum(int(v["held"]) for v in others)
            parties = 1 + sum(1 for v in others if v["held"] or v["want"])
            share = max(1, slots.limit // parties)
            wanted = any(v["want"] for v in others)
            grant = min(need, max(0, slots.limit - taken - slots.held))
            if wanted:
                grant = min(grant, max(0, share - slots.held))
            outcome["grant"], outcome["fair"] = grant, share if wanted else 0
            held, want = slots.held + grant, need - grant
            renew = float(mine["until"]) - now < self.lease / 2
            if not held and not want:
                if self.me in holders:
                    del holders[self.me]
                    return True
                return changed
            if mine["held"] == held and mine["want"] == want and not renew:
                return changed
            holders[self.me] = {"held": held, "want": want, "until": now + self.lease}
            return True

        record = await self.records.change(key_of("slots.", slots.domain), mutate, fresh=fresh)
        slots.held += outcome["grant"]
        slots.fair = outcome["fair"]
        mine = record.get("holders", {}).get(self.me)
        if mine is not None:
            slots.until = float(mine["until"])

    async def _tick(self) -> None:
        """Give back slots unused for LINGER ticks, keep no more than a fair share when
        others wait, renew the lease of the rest; forget domains no longer paced."""
        now = time.time()
        for domain, times in list(self._times.items()):
            if (not times or times[-1] < now - 1.0) and not self._pacing[domain].locked():
                del self._times[domain], self._pacing[domain]
                self.records.seen.pop(key_of("rate.", domain), None)
        for domain, slots in list(self._slots.items()):
            slots.peaks.append(slots.peak)
            slots.peak = slots.busy
            keep = max(slots.busy, *slots.peaks)
            if slots.waiters:
                continue  # the grower writes
            if slots.fair:
                keep = slots.busy  # others wait: free slots go to them
            if not slots.held and not keep:
                del self._slots[domain]  # and what was seen of it: the domains come and go
                self.records.seen.pop(key_of("slots.", domain), None)
                continue
            record = self.records.cached(key_of("slots.", domain)) or {}
            saturated = (
                sum(int(h["held"]) for h in record.get("holders", {}).values()) >= slots.limit
            )
            if keep < slots.held or slots.until - time.time() < self.lease / 2 or saturated:
                slots.held = keep
                # A saturated domain is read afresh: another worker may be waiting for it.
                await self._write(slots, fresh=saturated)
                self._hand_out(slots)

    # -- rates -----------------------------------------------------------------------------

    async def pace(self, domain: str) -> None:
        """Wait for the domain's next send time (none without a rate for it)."""
        rate = self.settings.delivery_rate_for(domain)
        if rate <= 0:
            return
        times = self._times[domain]
        async with self._pacing[domain]:
            now = time.time()
            while times and times[0] < now - 1.0 / rate:
                times.popleft()  # reserved and not used in time: dropped, never a burst
            if not times:
                block = max(1, min(int(rate / 5), 50))
                start = await self._reserve(domain, rate, block, now)
                times.extend(start + i / rate for i in range(block))
            at = times.popleft()
        delay = at - time.time()
        if delay > 0:
            metrics.delivery_rate_limited.add(1, {"limit": "rate"})
            await asyncio.sleep(delay)

    async def _reserve(self, domain: str, rate: float, block: int, now: float) -> float:
        """The first of `block` send times reserved for this worker, 1/rate apart."""
        start = now

        def mutate(record: Record) -> bool:
            nonlocal start
            start = max(now, float(record.get("next", 0.0)))
            record["domain"] = domain
            record["next"] = start + block / rate
            return True

        await self.records.change(key_of("rate.", domain), mutate)
        return start


def _prune(record: Record, now: float) -> bool:
    """Drop the holders whose lease ran out (a worker that died)."""
    holders = record.get("holders", {})
    gone = [k for k, v in holders.items() if float(v.get("until", 0)) < now]
    for k in gone:
        del holders[k]
    return bool(gone)
