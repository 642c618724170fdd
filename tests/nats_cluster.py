"""A NATS cluster on loopback for the tests: three nats-server processes with routes and
JetStream, each on free ports, which a test may `kill -9` and start again one by one.

Each node keeps its JetStream directory and its ports across a restart, as a restarted pod of a
StatefulSet would; a killed node comes back, catches up from the others and serves again. The
same class runs one node alone (no routes) for the one-node durability test: it writes the
config `empath up` writes (`up.write_nats_config`), so that test checks what users run.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors

from empath.core import up
from tests import servers
from tests.waiting import eventually

CLUSTER_NAME = "empath-test"


@dataclass
class Node:
    """One nats-server of the cluster: its name (the JetStream API's `server_name`), ports and
    data directory, and its process while it runs."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    directory: Path
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def varz(self) -> dict[str, Any]:
        """The server's own account of its configuration (the monitoring port's /varz)."""
        return dict(httpx.get(f"http://127.0.0.1:{self.monitor_port}/varz", timeout=5).json())

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        log = (self.directory / "nats.log").open("ab")
        with log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        servers.wait_port(self.port, self.process, self.directory / "nats.log")

    def kill(self) -> None:
        """`kill -9`: no shutdown, no flush; what was not on disk is gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            servers.stop(self.process)


@dataclass
class Cluster:
    """`size` nats-server processes routed to one another (one: a lone server)."""

    directory: Path
    size: int = 3
    sync_always: bool = False
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = [(servers.free_port(), servers.free_port()) for _ in range(self.size)]
        routes = ", ".join(f'"nats-route://127.0.0.1:{c}"' for _, c in ports)
        for number, (port, cluster_port) in enumerate(ports, start=1):
            monitor_port = servers.free_port()
            name = f"n{number}"
            directory = self.directory / name
            directory.mkdir(parents=True, exist_ok=True)
            config = up.write_nats_config(directory / "nats.conf", sync_always=self.sync_always)
            extra = [f"server_name: {name}"]
            if self.size > 1:
                extra.append(
                    f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{cluster_port}\n"
                    f"  routes: [{routes}]\n}}"
                )
            config.write_text(config.read_text() + "\n".join(extra) + "\n")
            argv = up.nats_argv(
                host="127.0.0.1", port=port, store_dir=directory / "js", config=config
            )
            argv.append(f"--http_port={monitor_port}")
            self.nodes.append(Node(name, port, cluster_port, monitor_port, directory, argv))

    @property
    def url(self) -> str:
        """Every node, as `EMPATH_NATS_URL` lists them."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until JetStream answers through every running node (a meta leader is elected
        and every node has joined it); on a busy machine that can take a while."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                await eventually(
                    lambda node=node: _jetstream_answers(node.url),  # type: ignore[misc]
                    what=f"JetStream to answer on {node.name}",
                    timeout=timeout,
                    interval=0.2,
                )
            except AssertionError as error:
                logs = {n.name: (n.directory / "nats.log").read_text()[-1500:] for n in self.nodes}
                raise AssertionError(f"{error}; the servers' logs end: {logs}") from None

    async def leader(self, stream: str) -> Node:
        """The node that leads `stream` now, as the JetStream API says (stream info)."""

        async def ask() -> str | None:
            nc = await nats.connect(servers=self.url.split(","), connect_timeout=2)
            try:
                info = await nc.jetstream(timeout=2).stream_info(stream)
                return info.cluster.leader if info.cluster else None
            finally:
                await nc.close()

        name = await eventually(
            ask,
            what=f"a leader of {stream}",
            timeout=30,
            interval=0.2,
            ignoring=(nats.errors.Error, nats.js.errors.Error, OSError),
        )
        assert name is not None
        return self.node(name)

    async def current(self, stream: str, node: Node, *, timeout: float = 30.0) -> None:
        """Wait until `node` is a replica of `stream` that has caught up with its leader."""

        async def replica_is_current() -> bool:
            nc = await nats.connect(servers=self.url.split(","), connect_timeout=2)
            try:
                info = await nc.jetstream(timeout=2).stream_info(stream)
            finally:
                await nc.close()
            if info.cluster is None:
                return False
            if info.cluster.leader == node.name:
                return True
            return any(
                peer.name == node.name and peer.current and not peer.offline
                for peer in info.cluster.replicas or []
            )

        await eventually(
            replica_is_current,
            what=f"{node.name} to be a current replica of {stream}",
            timeout=timeout,
            interval=0.2,
            ignoring=(nats.errors.Error, nats.js.errors.Error, OSError),
        )


async def _jetstream_answers(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    except (nats.errors.Error, OSError):
        return False
    try:
        await nc.jetstream(timeout=2).account_info()
        return True
    except (nats.errors.Error, nats.js.errors.Error, OSError):
        return False
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.close()


@contextlib.contextmanager
def running(directory: Path, *, size: int = 3, sync_always: bool = False) -> Iterator[Cluster]:
    """A started cluster, stopped (and every node with it) when the block ends."""
    cluster = Cluster(directory, size=size, sync_always=sync_always)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
