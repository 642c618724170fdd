"""The operator's own telemetry: how its reconciles go, and what each MailServer's status says.

On call, "is the operator keeping up, and which MailServer is unwell?" should need no log:
`empath.operator.reconciles.total` (by result), `empath.operator.reconcile.duration.seconds`
and `empath.operator.reconcile.errors.total` (by reason) per MailServer, and
`empath.operator.mailserver.condition` (1 true, 0 false, per condition type), the status
conditions as a metric, and `empath.operator.service.ready_replicas` per service (an alert
when one has none). Attributes name the MailServer and its namespace: one series per
MailServer, bounded by what the cluster runs. They are served as `/metrics` on the operator's
metrics listener and pushed over OTLP when the operator has an endpoint, like every service's.
The two gauges are read from what the status writes last said (`report_*`) at each
collection, so a deleted MailServer's series go with it (`forget`): a gauge set once would
say "no ready pods" of it for as long as the operator runs, and its alert would never clear.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from empath.core import health, telemetry

_meter = telemetry.meter("empath.operator")

reconciles = _meter.create_counter(
    "empath.operator.reconciles.total", unit="1", description="MailServer reconciles, by result"
)
reconcile_errors = _meter.create_counter(
    "empath.operator.reconcile.errors.total",
    unit="1",
    description="MailServer reconciles that failed, by reason",
)
reconcile_duration = _meter.create_histogram(
    "empath.operator.reconcile.duration.seconds",
    unit="s",
    description="Time of one MailServer reconcile",
    explicit_bucket_boundaries_advisory=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
)
# By MailServer (namespace, name): each condition's value, each service's ready pods. Each
# inner mapping is replaced whole, never changed: collections run in other threads (OTLP).
_conditions: dict[tuple[str, str], Mapping[str, int]] = {}
_ready: dict[tuple[str, str], Mapping[str, int]] = {}
# The uids of deleted MailServers: a status refresh still in flight at the deletion reports
# nothing of them afterwards (one made again under the name has a uid of its own).
_gone: set[str] = set()


def _observed(
    values: dict[tuple[str, str], Mapping[str, int]], label: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, {"namespace": namespace, "mailserver": name, label: key})
            for (namespace, name), found in list(values.items())
            for key, value in found.items()
        ]

    return observe


_meter.create_observable_gauge(
    "empath.operator.mailserver.condition",
    callbacks=[_observed(_conditions, "condition")],
    description="A MailServer's status conditions: 1 true, 0 false, by type",
)
_meter.create_observable_gauge(
    "empath.operator.service.ready_replicas",
    callbacks=[_observed(_ready, "service")],
    description="Ready pods of each service of a MailServer, as its status last said",
)


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body["metadata"]
    return str(meta["namespace"]), str(meta["name"])


def _server(body: Mapping[str, Any]) -> dict[str, str]:
    namespace, name = _key(body)
    return {"namespace": namespace, "mailserver": name}


@contextlib.contextmanager
def reconciling(body: Mapping[str, Any]) -> Iterator[None]:
    """Count and time one reconcile of `body`; an exception is its failure, by its type
    (`PermanentError`: the spec; `TemporaryError`: the API), and goes on."""
    server = _server(body)
    started = time.perf_counter()
    try:
        yield
    except Exception as error:
        reconciles.add(1, {**server, "result": "error"})
        reconcile_errors.add(1, {**server, "reason": type(error).__name__})
        raise
    else:
        reconciles.add(1, {**server, "result": "ok"})
    finally:
        reconcile_duration.record(time.perf_counter() - started, server)


def report_conditions(body: Mapping[str, Any], conditions: list[dict[str, Any]]) -> None:
    """Record the conditions a status write says (each by its type)."""
    if body["metadata"].get("uid") in _gone:
        return
    key = _key(body)
    said = {
        str(condition["type"]): 1 if condition.get("status") == "True" else 0
        for condition in conditions
        if condition.get("type")
    }
    _conditions[key] = {**_conditions.get(key, {}), **said}


def report_services(body: Mapping[str, Any], replicas: Mapping[str, Mapping[str, int]]) -> None:
    """Record the ready pods of each service a status write says."""
    if body["metadata"].get("uid") in _gone:
        return
    key = _key(body)
    said = {service: int(counts.get("readyReplicas", 0)) for service, counts in replicas.items()}
    _ready[key] = {**_ready.get(key, {}), **said}


def forget(namespace: str, name: str, uid: str | None) -> None:
    """A MailServer was deleted: its gauges' series go from the next collection on."""
    if uid:
        _gone.add(uid)
    _conditions.pop((namespace, name), None)
    _ready.pop((namespace, name), None)


@contextlib.asynccontextmanager
async def serving(listen: str | None) -> AsyncIterator[None]:
    """Serve `GET /metrics` on `listen` (host:port) for as long as the block runs: kopf's own
    listener answers only its liveness probe."""
    if not listen:
        yield
        return
    async with health.listening(listen, {"/metrics": health.metrics}):
        yield
