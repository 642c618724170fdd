"""NATS JetStream: connect, create streams and KV buckets, publish events, consume them.

Every publish carries a `Nats-Msg-Id` (JetStream drops duplicates within the stream's window)
and the W3C trace context. Consumers ack only after their work is done; a `TemporaryError`
naks the message for redelivery later, a `PermanentError` terminates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    Placement,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from empath.core import (
    errors,
    events,
    ids,
    logs,
    metrics,
    names,
    natsauth,
    periodic,
    signing,
    telemetry,
)
from empath.core.settings import Settings

log = logging.getLogger("empath.core.bus")
_tracer = telemetry.tracer("empath.core.bus")

Handler = Callable[[Msg], Awaitable[None]]


@dataclass(slots=True)
class Bus:
    """One NATS connection and its JetStream context, shared by a service's tasks."""

    nc: NATS
    js: JetStreamContext
    publish_timeout: float
    # Every stream and KV bucket is made (and kept) with this many replicas, on servers with
    # these placement tags (EMPATH_NATS_REPLICAS, EMPATH_NATS_PLACEMENT_TAGS).
    replicas: int = 1
    placement_tags: tuple[str, ...] = ()
    # This service's event key: every event it publishes carries its signature (`signing`).
    signer: signing.Signer | None = None

    async def close(self) -> None:
        """Drain when connected (in-flight acks go out), otherwise just close."""
        if self.nc.is_closed:
            return
        if self.nc.is_connected:
            try:
                await self.nc.drain()
                return
            except (nats.errors.Error, OSError) as error:
                log.warning("could not drain the NATS connection: %r", error)
        try:
            await self.nc.close()
        except (nats.errors.Error, OSError):
            # nats.py stops half-way when flushing to a dead socket fails, leaving the
            # subscription tasks running; finish its cleanup.
            for sub in list(self.nc._subs.values()):
                task = sub._wait_for_msgs_task
                if task is not None and not task.done():
                    task.cancel()
            self.nc._subs.clear()

    async def publish(self, subject: str, event: events.Model, *, msg_id: str) -> None:
        """Publish an event and wait for JetStream's ack, or raise `BusUnavailable`."""
        await self.publish_encoded(subject, event.model_dump_json().encode(), msg_id=msg_id)

    async def publish_encoded(self, subject: str, data: bytes, *, msg_id: str) -> None:
        """`publish` of an event already encoded as JSON (by a caller that had to measure
        it)."""
        if not self.nc.is_connected:
            # nats.py would buffer the publish and send it after reconnecting, possibly
            # after we told the SMTP client 451: refuse now instead.
            raise errors.BusUnavailable("not connected to NATS")
        stream = {"subject": subject}  # a handful of fixed subjects, never a message's id
        started = time.monotonic()
        with telemetry.span(_tracer, "nats.publish", attributes=lambda: {"nats.subject": subject}):
            headers = telemetry.inject({"Nats-Msg-Id": msg_id})
            if self.signer is not None:
                headers[signing.HEADER] = self.signer.sign(subject, data)
            try:
                await self.js.publish(
                    subject,
                    data,
                    timeout=self.publish_timeout,
                    headers=headers,
                )
            except (nats.errors.Error, nats.js.errors.Error, OSError) as error:
                metrics.nats_publish_errors.add(1, stream)
                raise errors.BusUnavailable(f"publish to {subject} failed: {error!r}") from error
            finally:
                metrics.nats_publish_duration.record(time.monotonic() - started, stream)

    async def key_value(
        self, bucket: str, *, history: int = 1, ttl: float | None = None
    ) -> KeyValue:
        """Open a KV bucket, creating it the first time (entries expire after `ttl`), with the
        wanted replicas; a bucket made with other replicas is changed to them.

        A bucket this role may not create (README "Security": each is made by its owner) is
        waited for: on Kubernetes the services start in any order, and delivery and control
        each open a bucket the other makes, so failing here would crash-loop them both."""
        waited = False
        while True:
            try:
                kv = await self.js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    created = await self.js.create_key_value(
                        KeyValueConfig(
                            bucket=bucket,
                            history=history,
                            storage=StorageType.FILE,
                            ttl=ttl,
                            replicas=self.replicas,
                            placement=placement(self.placement_tags),
                        )
                    )
                except nats.errors.TimeoutError:
                    # A refused request gets no answer: the bucket is another role's to make.
                    if not waited:
                        log.warning("KV bucket %s is missing: waiting for its owner", bucket)
                        waited = True
                    await asyncio.sleep(BUCKET_WAIT)
                    continue
                # On a cluster the bucket exists before its server serves it: a write at once
                # would find no responder.
                await _led(self.js, f"KV_{bucket}")
                return created
            await _replicate(self.js, f"KV_{bucket}", self.replicas, self.placement_tags)
            return kv

    async def heartbeat(
        self,
        service: str,
        stop: asyncio.Event,
        *,
        every: float = 10.0,
        details: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """Renew this instance's entry in the services bucket until `stop` (for status), with
        what `details` says at each beat (ingress: its plugins' calls, `pluginstatus`)."""
        kv = await self.key_value(names.SERVICES_BUCKET, ttl=names.HEARTBEAT_TTL_SECONDS)
        key = f"{service}.{ids.INSTANCE_KEY}"
        record = {"service": service, "instance": ids.INSTANCE, "started": time.time()}

        async def beat() -> None:
            now = {**(details() if details else {}), **record}
            await kv.put(key, json.dumps(now).encode())

        # Every service beats: while NATS is away, one warning each, not one each interval.
        what = f"heartbeat of {key}"
        await periodic.every(every, beat, stop=stop, log=log, what=what, warn_once=True)
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
            await kv.purge(key)


# Seconds between looks for a KV bucket that its owner has yet to make.
BUCKET_WAIT = 1.0

# Values read per request while reading a bucket to its end.
KV_READ_BATCH = 1000


async def kv_items(kv: KeyValue, keys: str = ">") -> list[tuple[str, bytes]]:
    """Every (key, value) under `keys` as it is now, by key (deleted keys left out).

    Not nats.py's `kv.keys()` or `kv.watch()`: their watcher says "that was all" when the
    consumer reports nothing pending, which it also does once the server has sent every value
    and before the client has read them, so a busy client may read a full bucket as empty. A
    pull consumer sends nothing until asked: what it counts as pending when created is exactly
    what there is to read, and each value says how many are left after it."""
    js: JetStreamContext = kv._js
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        mem_storage=True,
        inactive_threshold=30.0,
    )
    prefix = kv._pre
    reader = await js.pull_subscribe(f"{prefix}{keys}", stream=kv._stream, config=config)
    found: dict[str, bytes] = {}
    consumer = None
    try:
        info = await reader.consumer_info()
        consumer = info.name
        remaining = info.num_pending or 0
        while remaining > 0:
            for message in await reader.fetch(min(remaining, KV_READ_BATCH), timeout=5.0):
                remaining = message.metadata.num_pending
                key = message.subject.removeprefix(prefix)
                operation = message.headers.get("KV-Operation") if message.headers else None
                if operation in {"DEL", "PURGE"} or not message.data:
                    found.pop(key, None)
                else:
                    found[key] = message.data
    finally:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
            await reader.unsubscribe()
            # Gone now, not when idle for `inactive_threshold`: a caller that reads a bucket
            # every few seconds (ingress's look at the spools) would keep several alive.
            if consumer is not None:
                await js.delete_consumer(kv._stream, consumer)
    return sorted(found.items())


async def live_services(kv: KeyValue) -> list[dict[str, Any]]:
    """Every service instance whose heartbeat has not expired."""
    return [json.loads(value) for _, value in await kv_items(kv)]


async def connect(settings: Settings, *, name: str, retry: bool = True) -> Bus:
    """Connect to NATS (waiting for it when `retry`), then ensure every stream exists."""

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("disconnected from NATS")

    async def reconnected() -> None:
        log.info("reconnected to NATS")

    refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def error(e: Exception) -> None:
        text = str(e).lower()
        if "authorization violation" in text:
            if not refused.done():
                refused.set_result(e)
            log.error("NATS refused the credentials of %r: %s", settings.nats_user, e)
        elif "permissions violation" in text:
            # What a forged publish from this role, or a role with too few rights, looks like.
            log.warning("NATS refused: %s", e)
        else:
            log.debug("NATS: %r", e)

    credentials: dict[str, Any] = {}
    if settings.nats_user:
        credentials = {"user": settings.nats_user, "password": settings.nats_secret() or ""}
    options: dict[str, Any] = {
        "servers": [url.strip() for url in settings.nats_url.split(",")],
        "name": f"empath-{name}",
        "connect_timeout": int(max(1, settings.nats_connect_timeout)),
        "reconnect_time_wait": settings.nats_reconnect_wait,
        "max_reconnect_attempts": -1,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
        "inbox_prefix": natsauth.inbox_prefix(settings.nats_user),
        "tls": _tls(settings),
        **credentials,
    }
    delay = 0.5
    while True:
        # nats.py retries a refused login for ever; a wrong credential stops the service.
        connecting = asyncio.create_task(nats.connect(**options))
        await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
        if refused.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                nc = await connecting
                await nc.close()
            raise errors.ConfigurationError(
                f"NATS at {settings.nats_url} refused the credentials of "
                f"{settings.nats_user or 'an anonymous client'}: check EMPATH_NATS_USER and "
                "EMPATH_NATS_PASSWORD (or EMPATH_NATS_PASSWORD_FILE)"
            )
        try:
            nc = connecting.result()
            break
        except (nats.errors.Error, OSError) as e:
            if not retry:
                raise errors.BusUnavailable(f"cannot reach NATS at {settings.nats_url}") from e
            log.warning("waiting for NATS at %s: %r", settings.nats_url, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
    bus = Bus(
        nc=nc,
        js=nc.jetstream(timeout=settings.publish_timeout),
        publish_timeout=settings.publish_timeout,
        replicas=settings.nats_replicas,
        placement_tags=tuple(settings.nats_placement_tags),
        signer=signing.signer_of(settings),
    )
    delay = 0.5
    while True:
        try:
            await ensure_streams(bus.js, replicas=bus.replicas, placement_tags=bus.placement_tags)
            return bus
        except (nats.errors.Error, nats.js.errors.Error, OSError) as e:
            # Connected, but JetStream does not answer yet: a cluster still electing its
            # leader (all its servers restarted at once), or one that lost its majority.
            if not retry:
                await bus.close()
                raise errors.BusUnavailable(f"JetStream at {settings.nats_url}: {e!r}") from e
            log.warning("waiting for JetStream at %s: %r", settings.nats_url, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def _tls(settings: Settings) -> ssl.SSLContext | None:
    """TLS to NATS when a CA is given or a URL says `tls://` (client certificate optional)."""
    wanted = settings.nats_tls_ca is not None or "tls://" in settings.nats_url
    if not wanted:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
    )
    if settings.nats_tls_cert is not None and settings.nats_tls_key is not None:
        context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    return context


def placement(tags: tuple[str, ...]) -> Placement | None:
    """Where JetStream may put a stream's replicas: servers with every one of `tags`."""
    return Placement(tags=list(tags)) if tags else None


def _same_replication(found: StreamConfig, replicas: int, tags: tuple[str, ...]) -> bool:
    found_tags = (found.placement.tags if found.placement else None) or []
    return (found.num_replicas or 1) == replicas and sorted(found_tags) == sorted(tags)


async def _replicate(
    js: JetStreamContext, stream: str, replicas: int, tags: tuple[str, ...]
) -> None:
    """Give an existing stream (a KV bucket's) the wanted replicas and placement, keeping the
    rest of its configuration. JetStream copies the data to the new replicas (or drops the
    extra ones) while the stream keeps serving. A role that may not change the stream gets no
    answer: it logs that and goes on, and the bucket's owner puts it right."""
    config = (await js.stream_info(stream)).config
    if _same_replication(config, replicas, tags):
        return
    log.info("stream %s: %s replicas, changing to %d", stream, config.num_replicas, replicas)
    try:
        await js.update_stream(config.evolve(num_replicas=replicas, placement=placement(tags)))
    except nats.errors.TimeoutError:
        log.warning("stream %s has other replicas; not allowed to change them", stream)
        return
    await _led(js, stream)


async def _led(js: JetStreamContext, stream: str, *, timeout: float = 30.0) -> None:
    """Wait until a stream just made, or whose replicas just changed, has a leader: until
    then every write to it fails, and a service would start only to answer 451."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            info = await js.stream_info(stream)
            if info.cluster is None or info.cluster.leader:
                return
        await asyncio.sleep(0.1)
    log.warning("stream %s has no leader %.0fs after its replicas changed", stream, timeout)


async def ensure_streams(
    js: JetStreamContext, *, replicas: int = 1, placement_tags: tuple[str, ...] = ()
) -> None:
    """Create or update every stream of `names.STREAMS` (idempotent, safe to race), with
    `replicas` replicas on servers with `placement_tags`.

    A stream already as wanted is left alone: only the spool (and the admin) may create or
    change streams (README "Security"), so the other roles just look them up; when one is
    missing or differs, they log it and go on, and the spool puts it right."""
    for spec in names.STREAMS:
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=spec.max_age_seconds,
            duplicate_window=spec.duplicate_window_seconds,
            num_replicas=replicas,
            placement=placement(placement_tags),
        )
        try:
            found: StreamConfig | None = (await js.stream_info(spec.name)).config
        except nats.js.errors.NotFoundError:
            found = None
        if found is not None and _same_stream(found, config):
            continue
        try:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)
        except nats.errors.TimeoutError:
            # A refused request gets no answer: this role may not create or change streams.
            log.warning("stream %s is missing or differs; not allowed to fix it", spec.name)
            continue
        await _led(js, spec.name)


def _same_stream(found: StreamConfig, wanted: StreamConfig) -> bool:
    wanted_tags = (wanted.placement.tags if wanted.placement else None) or []
    return (
        sorted(found.subjects or []) == sorted(wanted.subjects or [])
        and found.retention == wanted.retention
        and found.storage == wanted.storage
        and round(found.max_age or 0) == round(wanted.max_age or 0)
        and round(found.duplicate_window) == round(wanted.duplicate_window)
        and _same_replication(found, wanted.num_replicas or 1, tuple(wanted_tags))
    )


async def consume(
    bus: Bus,
    *,
    stream: names.StreamSpec,
    subject: str,
    durable: str,
    handle: Handler,
    stop: asyncio.Event,
    batch: int = 16,
    concurrency: int = 1,
    ack_wait: float = 30.0,
    retry_delay: float = 5.0,
    backoff_to: float | None = None,
) -> None:
    """Feed messages of a durable pull consumer to `handle` until `stop` is set.

    Any number of processes may run the same durable consumer: JetStream hands each message
    to one of them, and redelivers it when that one does not ack within `ack_wait` (a handler
    that needs longer reports progress; see `keep_alive`). Up to `concurrency` messages are
    handled at once; on stop, those in flight are finished before this returns. A message a
    handler puts back (a temporary failure) comes again after `retry_delay`, or, with
    `backoff_to`, after a delay that doubles with each delivery of it, up to that many seconds.
    """
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=max(batch * 64, concurrency * 4, 1024),
    )

    async def subscribe() -> JetStreamContext.PullSubscription:
        return await bus.js.pull_subscribe(
            subject, durable=durable, stream=stream.name, config=config
        )

    what = f"cannot subscribe {durable} ({stream.name})"
    sub = await periodic.until_done(subscribe, stop=stop, log=log, what=what, delay=retry_delay)
    if sub is None:
        return
    inflight: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            room = concurrency - len(inflight)
            if room <= 0:
                await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await sub.fetch(min(batch, room), timeout=1.0)
            except TimeoutError:
                # Nothing to fetch. nats-py raises its own TimeoutError or, on some paths, the
                # built-in one (an OSError, so it must be caught before the next clause).
                metrics.consumer_backlog.set(0, {"consumer": durable})
                continue
            except (nats.errors.Error, nats.js.errors.Error, OSError) as e:
                log.warning("fetch from %s failed: %r", durable, e)
                await periodic.pause(stop, 1.0)
                continue
            pending = msgs[-1].metadata.num_pending if msgs else 0
            metrics.consumer_backlog.set(pending, {"consumer": durable})
            if concurrency == 1:
                for msg in msgs:
                    await _dispatch(msg, handle, retry_delay, ack_wait, backoff_to)
                continue
            for msg in msgs:
                task = asyncio.create_task(
                    _dispatch(msg, handle, retry_delay, ack_wait, backoff_to)
                )
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight)
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await sub.unsubscribe()


def keep_alive(msg: Msg, every: float = 10.0) -> KeepAlive:
    """Tell JetStream the message is still being worked on, so it is not redelivered:
    `async with keep_alive(msg): ...`."""
    return KeepAlive(msg, every)


class KeepAlive:
    """The in-progress acks of one message while its handler runs (`keep_alive`).

    Nearly every message is handled well within `every`: for those this costs one timer of
    the event loop, armed and cancelled. Only a message still in hand after `every` gets a task
    that reports progress every `every` seconds until the handler is done."""

    __slots__ = ("_beating", "_done", "_every", "_msg", "_timer")

    def __init__(self, msg: Msg, every: float = 10.0) -> None:
        self._msg = msg
        self._every = every
        self._done = asyncio.Event()
        self._beating: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._every, self._beat)

    def _beat(self) -> None:
        self._beating = asyncio.create_task(
            periodic.every(
                self._every,
                self._msg.in_progress,
                stop=self._done,
                log=log,
                what="in-progress ack",
                warn_once=True,
            )
        )

    async def __aexit__(self, *_: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._done.set()
        if self._beating is not None:
            await self._beating


def deliveries(msg: Msg) -> int:
    """How many times JetStream has delivered this message (1 the first time)."""
    try:
        return max(1, int(msg.metadata.num_delivered))
    except (AttributeError, ValueError, TypeError):  # not a JetStream message
        return 1


def retry_delay_of(msg: Msg, retry_delay: float, backoff_to: float | None) -> float:
    """When a message put back comes again: `retry_delay`, doubled for each earlier delivery
    when backing off, up to `backoff_to`."""
    if backoff_to is None:
        return retry_delay
    return float(min(retry_delay * 2 ** min(deliveries(msg) - 1, 20), max(backoff_to, retry_delay)))


async def _dispatch(
    msg: Msg, handle: Handler, retry_delay: float, ack_wait: float, backoff_to: float | None
) -> None:
    delay = retry_delay_of(msg, retry_delay, backoff_to)
    try:
        async with keep_alive(msg, every=ack_wait / 3):
            await handle(msg)
    except errors.EmpathError as error:
        about = log if error.queue_id is None else logs.for_message(log, error.queue_id)
        if error.temporary:
            about.warning("will retry %s in %.0fs: %s", msg.subject, delay, error)
            await _settle(msg.nak(delay=delay))
        else:
            about.error("dropping %s: %s", msg.subject, error)
            await _settle(msg.term())
        return
    except Exception:
        log.exception("unexpected error handling %s; will retry in %.0fs", msg.subject, delay)
        await _settle(msg.nak(delay=delay))
        return
    await _settle(msg.ack())


async def _settle(ack: Awaitable[None]) -> None:
    """Ack/nak/term; when it cannot be sent, JetStream redelivers after ack_wait anyway."""
    try:
        await ack
    except (nats.errors.Error, OSError) as e:
        log.warning("could not acknowledge: %r", e)
