"""`empath operator`: run the operator, and `empath operator --crds` to print its CRDs.

The operator's own settings are `EMPATH_OPERATOR_*` (the Helm chart sets them); a wrong one
stops it at start naming the setting, like every other Empath service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from pathlib import Path
from typing import Annotated, Any

import kopf
import typer
import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from empath.core import addresses, errors, logs, telemetry
from empath.core.settings import split_commas
from empath.operator import crds, handlers, kube, metrics, plugincalls, render

log = logging.getLogger("empath.operator")

PREFIX = "EMPATH_OPERATOR_"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    # The image every MailServer runs unless its spec names another (the chart's image).
    image: str = Field(min_length=1)
    # Secrets to pull that image with (comma-separated names); a MailServer may name its own.
    image_pull_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # OTLP/HTTP endpoint for the whole installation; a MailServer may override it.
    otlp_endpoint: str | None = None
    # Namespaces to watch, comma-separated; empty: the whole cluster.
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # kopf's peering object (ClusterKopfPeering, or KopfPeering per namespace): of several
    # operator replicas one is active. Empty: standalone, the only replica.
    peering: str = ""
    # Of peered replicas the one with the highest priority works and the others wait (kopf
    # pauses every replica whose equal it sees). Unset: a random one for each process.
    priority: int | None = Field(default=None, ge=0)
    # Every MailServer is reconciled again after this many seconds (the resync), which puts
    # back hand edits of its objects; a failed reconcile is retried sooner, with backoff.
    resync_seconds: float = Field(default=300, gt=0)
    # Apply this version's CRDs at start (Helm does not upgrade them); off where they are
    # managed otherwise (GitOps, or an operator without the right to patch them).
    apply_crds: bool = True
    # kopf's liveness endpoint, for the operator pod's probe.
    health_listen: str = "0.0.0.0:8080"
    # The operator's own metrics (`GET /metrics`, Prometheus text): reconciles and conditions.
    # Empty: not served (they are still pushed over OTLP when `otlp_endpoint` is set).
    metrics_listen: str = "0.0.0.0:9090"
    # A PodMonitor for each MailServer's pods, where the cluster serves PodMonitors (the
    # chart's `observability.podMonitor.enabled`).
    pod_monitors: bool = False
    # The operator key (a file; the chart makes it once, as a Secret): the control token of
    # each MailServer is derived from it, so the operator can ask control how the plugins'
    # calls went and write it into the MailPlugins' status. Unset: it does not ask.
    key_file: Path | None = None
    # Where a MailServer's control API answers `GET /api/v1/plugins`: {name} and {namespace}
    # are the MailServer's, {service} its control Service and {port} that Service's port.
    control_url: str = plugincalls.DEFAULT_URL
    # How long the operator waits for that answer.
    control_timeout: float = Field(default=3.0, gt=0, le=60)
    log_format: str = Field(default="json", pattern="^(text|json)$")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("namespaces", "image_pull_secrets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("key_file")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                key = value.read_bytes().strip()
            except OSError as error:
                raise ValueError(f"cannot read {value}: {error.strerror}") from None
            if len(key) < 16:
                raise ValueError(f"{value} holds fewer than 16 bytes: not a key")
        return value

    @field_validator("control_url")
    @classmethod
    def _control_url(cls, value: str) -> str:
        return plugincalls.check_template(value)

    @field_validator("health_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        addresses.parse_hostport(value)
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str) -> str:
        if value:
            addresses.parse_hostport(value)
        return value


def load() -> OperatorSettings:
    """The operator's settings, or `ConfigurationError` naming each wrong one."""
    try:
        return OperatorSettings()
    except ValidationError as error:
        problems = [
            f"{PREFIX}{str(problem['loc'][0]).upper()}: {problem['msg']}"
            if problem["loc"]
            else problem["msg"]
            for problem in error.errors()
        ]
        raise errors.ConfigurationError("; ".join(problems)) from None


def operator_key(settings: OperatorSettings) -> bytes | None:
    """The operator key (surrounding white space is not part of it), or None: unset."""
    return settings.key_file.read_bytes().strip() if settings.key_file else None


def peering_priority(settings: OperatorSettings) -> int:
    """kopf pauses every peer that sees another of equal priority, so replicas of one
    Deployment must not share one: unless set, each process draws its own."""
    return settings.priority if settings.priority is not None else secrets.randbelow(2**31)


async def run(
    settings: OperatorSettings,
    *,
    cluster: kube.Cluster | None = None,
    stop: asyncio.Event | threading.Event | None = None,
    ready: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until `stop` (or a signal) is set. kopf treats the event loop as its
    own (it cancels the tasks it finds on its way out): give it a loop, or a thread, of its own."""
    own_cluster = cluster is None
    cluster = cluster or kube.Cluster(kube.client(kube.configuration()))
    host, port = addresses.parse_hostport(settings.health_listen, default_host="0.0.0.0")
    priority = peering_priority(settings)
    if settings.peering:
        log.info("peering %r with priority %d", settings.peering, priority)
    key = operator_key(settings)
    state = handlers.State(
        cluster=cluster,
        options=render.Options(
            image=settings.image,
            otlp_endpoint=settings.otlp_endpoint,
            pod_monitor=settings.pod_monitors,
            pull_secrets=tuple(settings.image_pull_secrets),
            control_key=key,
        ),
        calls=plugincalls.Caller(
            key=key, url=settings.control_url, timeout=settings.control_timeout
        ),
        schedule=handlers.Schedule(resync=settings.resync_seconds),
        apply_crds=settings.apply_crds,
    )
    try:
        async with metrics.serving(settings.metrics_listen):
            await kopf.operator(
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                standalone=not settings.peering,
                peering_name=settings.peering or None,
                priority=priority,
                memo=kopf.Memo(state=state),
                liveness_endpoint=f"http://{host}:{port}/healthz" if port else None,
                stop_flag=stop,
                ready_flag=ready,
            )
    finally:
        if own_cluster:
            await cluster.http.aclose()


def command(
    print_crds: Annotated[
        bool, typer.Option("--crds", help="Print the CRDs this operator serves, as YAML.")
    ] = False,
) -> None:
    """Run the Kubernetes operator (MailServer, MailPlugin)."""
    if print_crds:
        typer.echo(yaml.safe_dump_all(crds.definitions(), sort_keys=False), nl=False)
        return
    try:
        settings = load()
    except errors.ConfigurationError as error:
        typer.echo(f"empath operator: {error}", err=True)
        raise typer.Exit(2) from None
    logs.setup(fmt=settings.log_format, level=settings.log_level)
    telemetry.setup(service="operator", otlp_endpoint=settings.otlp_endpoint)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
