"""The instruments every service records into, under the ancestor's names.

The names and meanings carry over from the ancestor (`empath.smtp.*`, `empath.delivery.*`,
`empath.dns.*`), so its dashboards and alerts keep working; what this system adds (JetStream
publish latency, object-store latency and errors) sits beside them under `empath.nats.*` and
`empath.store.*`. The instruments are made at import through the API's global meter, which
hands them to the SDK once `telemetry.setup` installs it; until then they record nothing.

Attributes are bounded on purpose: a reply's class (`2xx`/`4xx`/`5xx`), an enhanced code's
class (`4.4`), TLS yes or no, a DNS record type, never an address, a domain or a queue id.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import metrics as otel_metrics
from pydantic import BaseModel, SecretStr

from empath.core import queue, telemetry
from empath.core.settings import Settings

_meter = telemetry.meter("empath")


def _counter(name: str, description: str, unit: str = "1") -> otel_metrics.Counter:
    return _meter.create_counter(name, unit=unit, description=description)


# Bucket bounds for the units measured: the SDK's defaults are made for milliseconds.
SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BYTES = tuple(float(2**n) for n in range(10, 27, 2))  # 1 KiB to 64 MiB, by fours


def _histogram(name: str, description: str, unit: str = "s") -> otel_metrics.Histogram:
    return _meter.create_histogram(
        name,
        unit=unit,
        description=description,
        explicit_bucket_boundaries_advisory=list(SECONDS if unit == "s" else BYTES),
    )


def _gauge(name: str, description: str) -> otel_metrics.UpDownCounter:
    return _meter.create_up_down_counter(name, description=description)


# SMTP, in ingress.
smtp_connections = _counter("empath.smtp.connections.total", "SMTP connections accepted")
smtp_connections_active = _gauge("empath.smtp.connections.active", "SMTP connections open now")
smtp_errors = _counter("empath.smtp.errors.total", "SMTP error replies (4xx and 5xx) sent")
smtp_session_duration = _histogram(
    "empath.smtp.session.duration.seconds", "Time from an SMTP connection to its close"
)
smtp_command_duration = _histogram(
    "empath.smtp.command.duration.seconds", "Time from an SMTP command to its reply"
)
smtp_messages_received = _counter(
    "empath.smtp.messages.received.total", "Messages accepted and queued"
)
smtp_message_size = _histogram(
    "empath.smtp.message.size.bytes", "Size of the messages accepted", unit="By"
)

# Delivery.
delivery_attempts = _counter("empath.delivery.attempts.total", "Delivery attempts ended")
delivery_duration = _histogram("empath.delivery.duration.seconds", "Time of one delivery attempt")
delivery_delivered = _counter(
    "empath.delivery.messages.delivered.total", "Recipients delivered to the remote MX"
)
delivery_failed = _counter(
    "empath.delivery.messages.failed.total", "Recipients refused for good (5xx)"
)
delivery_retrying = _counter(
    "empath.delivery.messages.retrying.total", "Recipients deferred to a later attempt (4xx)"
)
delivery_connections_active = _gauge(
    "empath.delivery.connections.active", "SMTP connections to remote MX hosts open now"
)
delivery_rate_limited = _counter(
    "empath.delivery.rate_limited.total", "Attempts held back by a per-domain rate or cap"
)

# DNS, in delivery's resolver.
dns_lookup_duration = _histogram("empath.dns.lookup.duration.seconds", "Time of one DNS query")
dns_lookups = _counter("empath.dns.lookups.total", "DNS queries sent")
dns_cache_hits = _counter("empath.dns.cache.hits.total", "Answers found in the worker's cache")
dns_cache_misses = _counter("empath.dns.cache.misses.total", "Answers not in the worker's cache")
dns_cache_evictions = _counter(
    "empath.dns.cache.evictions.total", "Answers dropped from the worker's full cache"
)
dns_errors = _counter("empath.dns.errors.total", "DNS queries that failed (timeouts, SERVFAIL)")

# What this system adds: NATS JetStream and the object store.
nats_publish_duration = _histogram(
    "empath.nats.publish.duration.seconds", "Time from a JetStream publish to its ack"
)
nats_publish_errors = _counter(
    "empath.nats.publish.errors.total", "JetStream publishes that failed or were not acked"
)
consumer_backlog = _meter.create_gauge(
    "empath.nats.consumer.backlog",
    description="Messages in a stream its durable consumer has not been handed yet",
)
kv_conflicts = _counter(
    "empath.kv.cas_conflicts.total", "KV compare-and-set writes lost to another writer"
)
store_duration = _histogram(
    "empath.store.operation.duration.seconds", "Time of one object-store put or get"
)
outcomes_refused = _counter(
    "empath.spool.outcomes.refused.total",
    "Attempt outcomes refused: not for the attempt the message is out on (stale or forged)",
)
store_errors = _counter("empath.store.errors.total", "Object-store puts and gets that failed")
received_refused = _counter(
    "empath.spool.received.refused.total",
    "Received events not queued: their signature is missing, malformed, by an unknown key, "
    "or wrong (by reason)",
)
jobs_refused = _counter(
    "empath.delivery.jobs.refused.total",
    "Delivery jobs not sent: they do not match the queue record they name (forged or stale)",
)


# The spool's live views of the queue, read at each export; a view leaves when its spool stops.
_queues: list[tuple[Callable[[], Iterable[Queued]], asyncio.Event]] = []
_WAITING = {queue.State.QUEUED, queue.State.DEFERRED, queue.State.DELIVERING, queue.State.FROZEN}


class Queued(Protocol):
    """What the queue gauges need of a record (a record, or a spool view's summary of one)."""

    @property
    def state(self) -> queue.State: ...
    @property
    def received_at(self) -> datetime: ...


def observe_queue(snapshot: Callable[[], Iterable[Queued]], *, until: asyncio.Event) -> None:
    """Report the queue from a spool's live view (`empath.delivery.queue.size` by state, and
    `empath.delivery.queue.oldest.seconds`) until `until` is set."""
    _queues.append((snapshot, until))


def _entries() -> list[Queued]:
    _queues[:] = [(snapshot, stop) for snapshot, stop in _queues if not stop.is_set()]
    # Replicas of the spool see the same queue: one view says it all.
    return list(_queues[-1][0]()) if _queues else []


def _queue_size(options: otel_metrics.CallbackOptions) -> Iterator[otel_metrics.Observation]:
    if not _queues:
        return
    counts = collections.Counter(entry.state for entry in _entries())
    for state in queue.State:
        yield otel_metrics.Observation(counts[state], {"state": state.value})


def _queue_oldest(options: otel_metrics.CallbackOptions) -> Iterator[otel_metrics.Observation]:
    if not _queues:
        return
    waiting = [e.received_at for e in _entries() if e.state in _WAITING]
    oldest = (datetime.now(UTC) - min(waiting)).total_seconds() if waiting else 0.0
    yield otel_metrics.Observation(oldest)


_meter.create_observable_gauge(
    "empath.delivery.queue.size", [_queue_size], description="Messages in the queue, by state"
)
_meter.create_observable_gauge(
    "empath.delivery.queue.oldest.seconds",
    [_queue_oldest],
    unit="s",
    description="Age of the oldest message not yet delivered or failed (0: none waiting)",
)


# Which build runs with which settings, one series per service (`empath_instance_info` = 1):
# a rollout that changed the settings shows as a new hash, two replicas that disagree as two.
_instances: dict[str, dict[str, str]] = {}


def _public(value: Any) -> Any:
    """`value` with every secret left out: secret strings, and the credentials in a URL."""
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        return {str(k): _public(v) for k, v in value.items() if not isinstance(v, SecretStr)}
    if isinstance(value, list | tuple | set | frozenset):
        kept = [_public(item) for item in value if not isinstance(item, SecretStr)]
        return kept if isinstance(value, list | tuple) else sorted(kept, key=str)
    if isinstance(value, str) and "@" in value and "://" in value:
        parts = urlsplit(value)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return value


def settings_hash(settings: Settings) -> str:
    """A short hash of the effective settings without their secrets, so it can be shown
    anywhere and still tells two configurations apart."""
    text = json.dumps(_public(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# What each service counts that may stay at zero for days (errors, mostly): reported as 0 from
# the start, so that a rate or a ratio over it has a series before the first failure (and the
# dashboard and the alerts name only metrics a scrape has).
_ZEROED: dict[str, tuple[otel_metrics.Counter | otel_metrics.UpDownCounter, ...]] = {
    "ingress": (smtp_errors, smtp_connections_active, nats_publish_errors, store_errors),
    "spool": (nats_publish_errors, store_errors, kv_conflicts, outcomes_refused, received_refused),
    "delivery": (
        delivery_failed,
        delivery_retrying,
        delivery_rate_limited,
        delivery_connections_active,
        dns_errors,
        dns_cache_hits,
        dns_cache_misses,
        dns_cache_evictions,
        nats_publish_errors,
        store_errors,
        jobs_refused,
    ),
}


def announce(service: str, settings: Settings) -> None:
    """Report `empath.instance.info` for a service that is up (its version and settings hash),
    and its rarely counted metrics at zero."""
    for instrument in _ZEROED.get(service, ()):
        instrument.add(0)
    _instances[service] = {
        "service": service,
        "version": telemetry.version(),
        "settings_hash": settings_hash(settings),
    }


def _instance_info(options: otel_metrics.CallbackOptions) -> Iterator[otel_metrics.Observation]:
    for attributes in list(_instances.values()):
        yield otel_metrics.Observation(1, attributes)


_meter.create_observable_gauge(
    "empath.instance.info",
    [_instance_info],
    description="1 per running service, labelled with its version and settings hash",
)


_ENHANCED = re.compile(r"^\d{3}[ -]([245])\.(\d{1,3})\.\d{1,3}")


def status_class(reply: str | int) -> str:
    """`2xx`, `4xx` or `5xx` for an SMTP reply or code: the one bounded attribute of a reply."""
    text = str(reply).strip()
    return f"{text[:1]}xx" if text[:1] in {"2", "3", "4", "5"} else "other"


def enhanced_class(reply: str) -> str:
    """The class and subject of a reply's enhanced status code (`4.4`), or `none`."""
    match = _ENHANCED.match(reply.strip())
    return f"{match.group(1)}.{match.group(2)}" if match else "none"
