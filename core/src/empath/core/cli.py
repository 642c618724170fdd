"""The `empath` command: `empath up`, `empath <service>`, and a few helpers.

Services are found through entry points, so the command offers exactly the services that are
installed (one image runs them all: `empath ingress`, `empath spool`, ...).
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
import uvloop

from empath.core import (
    errors,
    events,
    health,
    logs,
    plugins,
    queries,
    services,
    settings,
    supervisor,
    telemetry,
    up,
)

log = logging.getLogger("empath.core.cli")

app = typer.Typer(
    name="empath",
    help="Empath, a Kubernetes-native mail transfer agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _start(service: str) -> settings.Settings:
    """Load settings and set up logging and telemetry, or exit 2 naming the bad setting."""
    try:
        loaded = settings.load()
    except errors.ConfigurationError as error:
        typer.echo(f"empath {service}: {error}", err=True)
        raise typer.Exit(2) from None
    logs.setup(fmt=loaded.log_format, level=loaded.log_level)
    telemetry.setup(service=service, otlp_endpoint=loaded.otlp_endpoint)
    for name in settings.unknown_environment():
        log.warning("ignoring %s: no such setting", name)
    return loaded


def settle_heap() -> None:
    """Take what the process holds by now (modules, settings, clients; once ready, the
    spool's view of the queue) out of the garbage collector's sight: a full collection then
    looks only at what came since. Measured with bench/relay, each service's full collections
    took 30-150 ms (the event loop stopped meanwhile: the tail of the acceptance latency) and,
    with all collections, about a tenth of its CPU; after this, a few ms. Only a process of
    the `empath` command does it (a service's, and `empath up`'s), never one that runs services
    in passing (the tests): a frozen object that later becomes garbage in a cycle is never
    collected (the few such objects of a process's start-up, not its traffic)."""
    gc.collect()
    gc.freeze()


def _run(service: str, main: Callable[[settings.Settings], object]) -> None:
    loaded = _start(service)
    settle_heap()
    try:
        # uvloop: the services spend most of their time in the event loop (sockets to NATS,
        # the object store and SMTP peers), and libuv's loop does that work for less CPU.
        uvloop.run(main(loaded))  # type: ignore[arg-type]
    except errors.ConfigurationError as error:
        typer.echo(f"empath {service}: {error}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("up")
def up_command() -> None:
    """Run the whole system here: NATS, the object store and every installed service."""
    _run("up", up.up)


@app.command("schemas")
def schemas_command(
    directory: Annotated[Path, typer.Argument(help="Where to write the JSON schemas.")],
) -> None:
    """Export the JSON schema of every event, of the query API's requests and answers, and of
    the plugin contract."""
    written = [
        *events.export_schemas(directory),
        *queries.export_schemas(directory),
        *plugins.export_schemas(directory),
    ]
    for path in written:
        typer.echo(str(path))


def _announce(service: str, detail: str) -> None:
    """One line on standard output once the service is ready (how `empath up` learns it)."""
    typer.echo(supervisor.ready_line(service, detail))


def _service_command(name: str, main: services.ServiceMain) -> Callable[[], None]:
    def command() -> None:
        def ready(service: str, detail: str) -> None:
            _announce(service, detail)
            settle_heap()  # what starting made (connections, the queue's view) as well

        async def run_one(loaded: settings.Settings) -> None:
            runtime = services.Runtime(settings=loaded, on_ready=ready)
            with services.stop_on_signals(runtime.stop):
                async with health.serving(runtime, loaded.health_listen):
                    await services.run_all({name: main}, runtime)

        _run(name, run_one)

    command.__doc__ = f"Run the {name} service."
    return command


def build(only: str | None = None) -> typer.Typer:
    """The `empath` command with every installed service and command, or with only the one
    named `only` (each is imported to be registered: a service's process need not import the
    others, nor the operator's Kubernetes client)."""
    for ep in entry_points(group=services.GROUP):
        if only in (None, ep.name):
            app.command(ep.name)(_service_command(ep.name, ep.load()))
    for ep in entry_points(group=services.COMMANDS_GROUP):
        if only in (None, ep.name):
            app.command(ep.name)(ep.load())
    return app


def main() -> None:
    named = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else None
    build(named)()
