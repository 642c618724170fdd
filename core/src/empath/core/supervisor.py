"""The services of `empath up`, each in a process of its own, kept running.

One Python process holds one core at most, and a relay keeps every service busy at once: in
one process they took turns on one core while the machine had more. So `empath up` starts
`empath <service>` for each installed service (with exactly its settings, in `EMPATH_*`
variables) and supervises them as Kubernetes would its pods:

- a service says it is ready with one line on its standard output (`empath <service> ready:
  <detail>`); its logs go to the same standard error as `empath up`'s;
- one that exits before it was ever ready stops the whole system (a wrong setting, named in
  its error: restarting it would only repeat it); one that dies later is started again, after
  a pause that doubles while it keeps dying, so `kill -9` of a service costs seconds;
- on stop, every service gets SIGTERM at once, finishes what is in flight within its shutdown
  grace, and is killed if it does not; if `empath up` itself is killed (`kill -9`), the kernel
  sends each child SIGTERM (`dies_with_parent`): none is left holding ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from empath.core import errors, periodic, settings

log = logging.getLogger("empath.core.supervisor")

READY_PREFIX = "empath "
READY_MARK = " ready: "

# Restart pauses for a service that keeps dying: from the first to the longest.
RESTART_FIRST_SECONDS = 0.5
RESTART_LONGEST_SECONDS = 30.0
# A service up this long is healthy again: its next death restarts it after the first pause.
HEALTHY_AFTER_SECONDS = 60.0


# Linux's prctl(PR_SET_PDEATHSIG): the kernel signals a child when its parent dies. Looked up
# once here, so the child calls it between fork and exec without loading anything.
_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True), "prctl", None)


def dies_with_parent() -> Callable[[], None] | None:
    """For `preexec_fn`: the child gets SIGTERM when `empath up` dies, even by `kill -9`, so
    no service, nats-server or SeaweedFS outlives it holding its ports and data directory.
    None where the kernel has no such call (the children then outlive a killed parent)."""
    if _prctl is None or not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = _prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call: nobody will tell us
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def ready_line(service: str, detail: str) -> str:
    """What a service prints on its standard output once it is ready."""
    return f"{READY_PREFIX}{service}{READY_MARK}{detail}"


def parse_ready(line: str) -> tuple[str, str] | None:
    """(service, detail) of a readiness line, None for any other line."""
    if not line.startswith(READY_PREFIX) or READY_MARK not in line:
        return None
    service, detail = line.removeprefix(READY_PREFIX).split(READY_MARK, 1)
    return service, detail.rstrip("\n")


def command(service: str) -> list[str]:
    """`empath <service>` with this interpreter (the console script beside it, if any)."""
    return [sys.executable, "-c", "from empath.core.cli import main; main()", service]


@dataclass(slots=True)
class Child:
    service: str
    config: settings.Settings
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    restarts: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        configs: dict[str, settings.Settings],
        *,
        stop: asyncio.Event,
        on_ready: Callable[[str, str], None],
    ) -> None:
        self.children = {name: Child(name, config) for name, config in configs.items()}
        self.stop = stop
        self.on_ready = on_ready
        self.failure: errors.ConfigurationError | None = None

    async def run(self) -> None:
        """Run every service until `stop`; raise when one could not start."""
        watchers = [
            asyncio.create_task(self._keep(child), name=f"supervise-{child.service}")
            for child in self.children.values()
        ]
        try:
            await self.stop.wait()
        finally:
            await asyncio.gather(*watchers, return_exceptions=True)
        if self.failure is not None:
            raise self.failure

    async def _keep(self, child: Child) -> None:
        """Start the child, and again each time it dies, until `stop`; then stop it."""
        pause = RESTART_FIRST_SECONDS
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            started = loop.time()
            process = await self._spawn(child)
            exited = asyncio.ensure_future(process.wait())
            stopping = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not exited.done():
                await self._terminate(child, exited)
                return
            code = exited.result()
            await asyncio.gather(*child.tasks, return_exceptions=True)
            if not child.ready:
                self.failure = errors.ConfigurationError(
                    f"{child.service} exited with code {code} before it was ready"
                )
                log.error("%s", self.failure)
                self.stop.set()
                return
            if loop.time() - started > HEALTHY_AFTER_SECONDS:
                pause = RESTART_FIRST_SECONDS
            child.restarts += 1
            log.warning(
                "%s exited with code %s: starting it again in %.1fs (restart %d)",
                child.service,
                code,
                pause,
                child.restarts,
            )
            await periodic.pause(self.stop, pause)
            pause = min(pause * 2, RESTART_LONGEST_SECONDS)

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith(settings.ENV_PREFIX)}
        env |= settings.environment(child.config)
        env.pop(f"{settings.ENV_PREFIX}HEALTH_LISTEN", None)  # one port cannot serve them all
        process = await asyncio.create_subprocess_exec(
            *command(child.service),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # stopped by us, in order, not by the terminal's Ctrl-C
            preexec_fn=dies_with_parent(),
        )
        child.process = process
        log.info("started %s (pid %d)", child.service, process.pid)
        assert process.stdout is not None
        child.tasks = [asyncio.create_task(self._read(child, process.stdout))]
        return process

    async def _read(self, child: Child, stdout: asyncio.StreamReader) -> None:
        """Pass the child's standard output on, and note when it says it is ready."""
        while line := (await stdout.readline()).decode(errors="replace"):
            said = parse_ready(line)
            if said is not None and said[0] == child.service:
                if not child.ready:
                    child.ready = True
                    self.on_ready(*said)
                else:
                    log.info("%s ready again: %s", *said)
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    async def _terminate(self, child: Child, exited: asyncio.Future[int]) -> None:
        assert child.process is not None
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
        grace = child.config.shutdown_grace + 15.0
        try:
            await asyncio.wait_for(asyncio.shield(exited), grace)
        except TimeoutError:
            log.warning("%s did not stop in %.0fs, killing it", child.service, grace)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await exited
        await asyncio.gather(*child.tasks, return_exceptions=True)
