"""Finding and running services.

Each service distribution registers `async def run(runtime)` under the entry-point group
`empath.services`; `empath <service>` runs one (as a container does) and `empath up` runs every
one installed. A service returns from `run` once `runtime.stop` is set and its work in flight
is finished: that is the whole graceful-shutdown contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from empath.core import metrics
from empath.core.settings import Settings

log = logging.getLogger("empath.core.services")

GROUP = "empath.services"
COMMANDS_GROUP = "empath.commands"


@dataclass(slots=True)
class Runtime:
    """What a running service gets: its settings, the stop signal and a way to say ready."""

    settings: Settings
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    on_ready: Callable[[str, str], None] = lambda service, detail: None
    # Each says why the service cannot work right now (None: it can); readiness fails then.
    checks: list[Callable[[], str | None]] = field(default_factory=list)

    def ready(self, service: str, detail: str) -> None:
        log.info("%s ready: %s", service, detail)
        metrics.announce(service, self.settings)
        self.on_ready(service, detail)


ServiceMain = Callable[[Runtime], Coroutine[object, object, None]]


def names() -> list[str]:
    """Installed services by name, in a stable order (without importing them)."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def discover() -> dict[str, ServiceMain]:
    """Installed services by name, in a stable order."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    return {name: found[name].load() for name in sorted(found)}


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, *, repeat_window: float = 2.0) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop`. The same signal again within `repeat_window` seconds is the
    same request delivered twice (a terminal's Ctrl-C reaches a wrapper that forwards it too);
    after that, a further signal is left to the default handler, to force the stop."""
    loop = asyncio.get_running_loop()
    first: float | None = None

    def handle(signum: int) -> None:
        nonlocal first
        now = loop.time()
        if first is None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            first = now
            stop.set()
        elif now - first > repeat_window:
            log.warning("received %s again: no longer waiting", signal.Signals(signum).name)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_all(mains: dict[str, ServiceMain], runtime: Runtime) -> None:
    """Run services side by side; when one fails, stop the others and re-raise."""
    tasks: dict[asyncio.Task[None], str] = {
        asyncio.create_task(main(runtime), name=name): name for name, main in mains.items()
    }
    failure: BaseException | None = None
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None and failure is None:
                log.error("%s failed: %s", tasks[task], error)
                failure = error
            if not runtime.stop.is_set():
                runtime.stop.set()
    if failure is not None:
        raise failure
