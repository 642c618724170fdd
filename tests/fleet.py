"""Empath as a fleet of processes, each of which a test may `kill -9` and start again.

The chaos and fuzz suites run every service as `empath <service>` in a process of its own, as a
pod runs it, beside a NATS server and an object store of their own that may be killed too. A
service's output goes to a log file that survives its restarts (a test reads it for
tracebacks), and its `/readyz` says when it is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats.errors

from empath.core import addresses, bus, errors, queue, settings, store, up
from empath.spool import records
from tests import servers, system
from tests.remote import Remote
from tests.waiting import eventually

EMPATH = str(Path(sys.executable).parent / "empath")


class Process:
    """A server process of the test's, which it may `kill -9`, stop, and end with the test."""

    process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """`kill -9`: no shutdown, no goodbye; whatever it had in flight is cut off."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            servers.stop(self.process)

    def end(self) -> None:
        """At the end of a test: killed, as nothing it would finish matters any more (a
        graceful stop takes its grace, and seconds more on a busy machine)."""
        if self.alive:
            self.kill()


class Service(Process):
    """One `empath <name>` process, started with exactly `config` plus its own health port."""

    def __init__(
        self, name: str, config: settings.Settings, directory: Path, *, label: str | None = None
    ) -> None:
        self.name = name
        self.label = label or name
        self.health_port = 0
        self.env = system.environment(config)
        self.log = directory / f"{self.label}.log"
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        # A port of its own each start, taken at the last moment: another process may have
        # taken one chosen earlier.
        self.health_port = servers.free_port()
        self.env["EMPATH_HEALTH_LISTEN"] = f"127.0.0.1:{self.health_port}"
        with self.log.open("ab") as out:
            out.write(f"=== start {self.starts} of empath {self.name} ({self.label})\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [EMPATH, self.name], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def alive_or_fail(self) -> bool:
        """True while it runs; once it exited, an assertion that says what it wrote."""
        if not self.alive:
            raise AssertionError(f"{self.label} exited: {self.output()[-3000:]}")
        return True

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until its `/readyz` answers 200 (fails at once if the process exited)."""
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        async with httpx.AsyncClient(timeout=2.0) as http:

            async def probe() -> int:
                self.alive_or_fail()
                try:
                    return (await http.get(url)).status_code
                except httpx.TransportError:
                    return 0

            await eventually(
                probe, until=lambda code: code == 200, what=f"{self.label} ready", timeout=timeout
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running(name: str, config: settings.Settings, directory: Path) -> Iterator[Service]:
    """`empath <name>` in a process of its own for the block (killed at its end, if still
    running): a service a test means to kill while it works."""
    service = Service(name, config, directory)
    service.start()
    try:
        yield service
    finally:
        service.end()


class ObjectStore(Process):
    """SeaweedFS of one test's own, which the test may `kill -9` and start again: same ports,
    same data directory, as a restarted pod with its volume would be."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = servers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = up.weed_argv(
            host="127.0.0.1", s3_port=self.port, data_dir=directory, bucket=None
        )
        self.env = {
            **os.environ,
            **up.s3_credentials_env(servers.S3_ACCESS_KEY, servers.S3_SECRET_KEY),
        }
        self.log = directory / "weed.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        servers.wait_port(self.port, self.process, self.log)


class Nats(servers.RestartableNats):
    """The NATS server of one test, restartable (same port, same JetStream directory)."""

    def restart(self) -> None:
        self.stop()
        self.start()

    def end(self) -> None:
        self.stop()


@dataclass
class Fleet:
    """NATS, the object store, the services and a sink, all running; and a look at the queue
    through the test's own NATS connection (which rides out a NATS restart as the services'
    do)."""

    config: settings.Settings
    nats: Nats
    objects: ObjectStore
    services: dict[str, Service]
    sink: Remote
    look: bus.Bus
    records: records.Records

    @property
    def smtp_port(self) -> int:
        return addresses.parse_hostport(self.config.smtp_listen)[1]

    async def ready(self, timeout: float = 60.0) -> None:
        await asyncio.gather(*(s.ready(timeout) for s in self.services.values()))

    async def restart(self, label: str) -> None:
        """`kill -9` one service and start it again (as Kubernetes restarts a pod)."""
        service = self.services[label]
        await asyncio.to_thread(service.kill)
        service.start()
        await service.ready()

    async def entries(self) -> list[queue.Entry] | None:
        """Every queue record, or None while the look's NATS connection is not back yet."""
        try:
            return await self.records.all()
        except (errors.EmpathError, nats.errors.Error, TimeoutError, OSError):
            return None

    async def in_flight(self) -> int:
        """Messages out for delivery now: those a kill may catch between the remote's 250
        and the outcome's publish, and so deliver again."""
        entries = await self.entries()
        return sum(e.state == queue.State.DELIVERING for e in entries or ())

    async def drained(self, queue_ids: set[str], *, timeout: float) -> list[queue.Entry]:
        """Wait until the queue holds a record for each of `queue_ids` and every record has
        finished (delivered or failed): nothing queued, deferred or out for delivery."""

        latest: list[queue.Entry] = []

        async def states() -> dict[str, int] | None:
            entries = await self.entries()
            if entries is None:
                return None
            latest[:] = entries
            counts = collections.Counter(
                "finished" if e.finished else f"{e.state}" for e in entries
            )
            counts["missing"] = len(queue_ids - {e.id for e in entries})
            return dict(counts)

        def done(counts: dict[str, int] | None) -> bool:
            return counts is not None and all(
                n == 0 for state, n in counts.items() if state != "finished"
            )

        await eventually(
            states, until=done, what="the queue to drain", timeout=timeout, interval=0.5
        )
        return latest

    async def bodies(self) -> list[str]:
        """The message bodies in the bucket now."""
        objects = store.ObjectStore(self.config)
        try:
            return await objects.keys()
        finally:
            objects.close()

    def tracebacks(self) -> dict[str, str]:
        """Each service's log, for those that logged a traceback."""
        return {
            label: service.output()
            for label, service in self.services.items()
            if "Traceback" in service.output()
        }


StartFleet = Callable[..., Awaitable[Fleet]]

TOKEN = "fuzz-token"


@dataclass
class Target:
    """Services running for a fuzzer: their settings and processes."""

    config: settings.Settings
    services: dict[str, Service]

    @property
    def smtp_port(self) -> int:
        return addresses.parse_hostport(self.config.smtp_listen)[1]

    @property
    def control_url(self) -> str:
        host, port = addresses.parse_hostport(self.config.control_listen)
        return f"http://{host}:{port}"
