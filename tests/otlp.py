"""An OTLP/HTTP receiver on loopback: what a collector would get from the services.

It decodes the real protobuf payloads (`opentelemetry-proto`) the SDK's exporters send to
`/v1/metrics` and `/v1/traces`, and keeps them for a test to read: the latest value of each
metric point (exports are cumulative) and every span.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from tests import servers


def _value(value: common_pb2.AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True, slots=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    port: int = 0
    # (metric name, service instance, attributes as sorted pairs) -> the latest value
    points: dict[tuple[str, str, tuple[tuple[str, Any], ...]], float] = field(default_factory=dict)
    resources: list[dict[str, Any]] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/metrics", self._metrics)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = servers.free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        body = await request.read()
        return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body

    async def _metrics(self, request: web.Request) -> web.Response:
        export = metrics_service_pb2.ExportMetricsServiceRequest.FromString(
            await self._body(request)
        )
        for resource_metrics in export.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            self.resources.append(resource)
            instance = str(resource.get("service.instance.id"))
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        if kind == "histogram":
                            value = float(point.count)
                        else:
                            value = float(point.as_double or point.as_int)
                        labels = tuple(sorted(_attributes(point.attributes).items()))
                        self.points[(metric.name, instance, labels)] = value
        reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    async def _traces(self, request: web.Request) -> web.Response:
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(await self._body(request))
        for resource_spans in export.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                        )
                    )
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    def total(self, name: str, **attributes: Any) -> float:
        """The sum over every service instance of the points of `name` that have
        `attributes` (a histogram's point counts its recordings)."""
        return sum(
            value
            for (metric, _, labels), value in self.points.items()
            if metric == name and attributes.items() <= dict(labels).items()
        )

    def trace(self, queue_id: str) -> list[Span]:
        """Every span of the trace in which a span names the message `queue_id`."""
        ids = {s.trace_id for s in self.spans if s.attributes.get("empath.queue_id") == queue_id}
        return [s for s in self.spans if s.trace_id in ids]
