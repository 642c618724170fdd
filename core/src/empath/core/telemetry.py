"""OpenTelemetry, configured in this one place: traces and metrics.

Traces follow a message across services through W3C trace context carried in NATS headers:
`inject` puts the current context into headers before a publish, `extract` restores it in the
consumer. Metrics are made by the instruments in `metrics` and read two ways: the Prometheus
reader always (the health listener serves it as `/metrics`, for clusters that scrape), and with
`EMPATH_OTLP_ENDPOINT` set an OTLP/HTTP exporter pushes them, beside the spans, to the same
collector. The export intervals are the SDK's own `OTEL_METRIC_EXPORT_INTERVAL` and
`OTEL_BSP_SCHEDULE_DELAY` (milliseconds), so a collector's usual knobs work unchanged.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from contextvars import Token
from importlib import metadata
from typing import ParamSpec, TypeVar

import prometheus_client
from opentelemetry import context, propagate, trace
from opentelemetry import metrics as otel_metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from empath.core import ids

_configured = False


def version() -> str:
    try:
        return metadata.version("empath-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout without install
        return "0+unknown"


def resource(service: str) -> Resource:
    """Who reports: the service, its version and this process (two pods, two instances).

    `Resource.create` also merges `OTEL_RESOURCE_ATTRIBUTES`, which is how Kubernetes adds the
    namespace, the pod and the MailServer's name through the downward API.
    """
    return Resource.create(
        {
            "service.name": f"empath-{service}",
            "service.version": version(),
            "service.instance.id": ids.INSTANCE,
        }
    )


def setup(*, service: str, otlp_endpoint: str | None) -> None:
    """Install the tracer and meter providers once per process."""
    global _configured
    if _configured:
        return
    where = resource(service)
    # Without an exporter nobody sees a span: they are not recorded (each still has its trace
    # and span ids, so a message's trace context is kept and passed on all the same), which
    # saves what recording costs on every step of every message.
    tracers = TracerProvider(resource=where, sampler=ALWAYS_ON if otlp_endpoint else ALWAYS_OFF)
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = otlp_endpoint.rstrip("/")
        tracers.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        )
    trace.set_tracer_provider(tracers)
    otel_metrics.set_meter_provider(MeterProvider(resource=where, metric_readers=readers))
    _configured = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def _quiet(tracer: trace.Tracer) -> bool:
    """Whether nobody sees the spans of `tracer`: it is of the provider `setup` installs
    without an exporter (its sampler is ALWAYS_OFF). A tracer got before `setup` is a proxy
    that resolves to the provider once there is one."""
    real = getattr(tracer, "_tracer", tracer) if isinstance(tracer, trace.ProxyTracer) else tracer
    return getattr(real, "sampler", None) is ALWAYS_OFF


class _Carried:
    """The trace context `span` makes current instead of an unrecorded span: the parent's."""

    __slots__ = ("_context", "_token")

    def __init__(self, parent: context.Context) -> None:
        self._context = parent
        self._token: Token[context.Context] | None = None

    def __enter__(self) -> None:
        self._token = context.attach(self._context)

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            context.detach(self._token)


def span(
    tracer: trace.Tracer,
    name: str,
    *,
    parent: context.Context | None = None,
    attributes: Callable[[], dict[str, str | int]] | None = None,
) -> contextlib.AbstractContextManager[object]:
    """A span `name` of the current trace (or of `parent`'s), current inside the block.

    Without an exporter nobody sees a span, and making one costs on every step of every
    message: then the block runs in the trace context it would have had as a parent (`parent`,
    or the current one as it is), so what it publishes carries the message's trace on all the
    same. Only a message with no trace yet gets an (unrecorded) span of a new trace, so its
    attempts still share one trace id. `attributes` is called only for a recorded span."""
    if not _quiet(tracer):
        return tracer.start_as_current_span(
            name, context=parent, attributes=attributes() if attributes else None
        )
    if parent is None:
        return contextlib.nullcontext()
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return tracer.start_as_current_span(name, context=parent)
    return _Carried(parent)


P = ParamSpec("P")
R = TypeVar("R")


def traced(span_name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run a coroutine function inside a span of the current trace: one line on a step that
    takes time (a DNS query, a connect, an SMTP transaction, a KV write)."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        tracing = tracer(function.__module__)

        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if _quiet(tracing):  # nobody sees it: no span (`span`)
                return await function(*args, **kwargs)
            with tracing.start_as_current_span(span_name):
                return await function(*args, **kwargs)

        return run

    return decorate


def meter(name: str) -> otel_metrics.Meter:
    return otel_metrics.get_meter(name, version())


def prometheus_text() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type, for `/metrics`."""
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (`traceparent`, `tracestate`) to NATS headers."""
    propagate.inject(headers)
    return headers


def extract(headers: dict[str, str] | None) -> context.Context:
    """The trace context a publisher put into NATS headers."""
    return propagate.extract(headers or {})


def traceparent() -> str | None:
    """The current span as a W3C `traceparent`, to keep in a record that outlives it."""
    return inject({}).get("traceparent")


def resumed(traceparent: str | None) -> context.Context:
    """The context a kept `traceparent` names (a new trace when there is none), so work done
    later for a message, by another process, joins the message's trace."""
    return extract({"traceparent": traceparent} if traceparent else None)
