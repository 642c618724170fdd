"""Real servers for the tests: nats-server, SeaweedFS (`weed mini`), and a TCP proxy.

The proxy sits between a service and a real server so a test can cut the connection (an
outage) and restore it, without stopping servers that other tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
from aiohttp import web

from empath.core import natsauth, up
from tests.waiting import eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}: {log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, its output in `log`, from listening on `port` until the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_port(port, process, log)
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def nats_process(directory: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A nats-server with JetStream: its URL, and its process for a test to pause."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = up.nats_argv(host="127.0.0.1", port=port, store_dir=directory / "js")
    with running(argv, port, directory / "nats.log") as process:
        try:
            yield f"nats://127.0.0.1:{port}", process
        finally:
            process.send_signal(signal.SIGCONT)  # a paused server would not hear SIGTERM


@contextlib.contextmanager
def nats_server(directory: Path) -> Iterator[str]:
    with nats_process(directory) as (url, _):
        yield url


@contextlib.contextmanager
def secure_nats(directory: Path) -> Iterator[tuple[str, Path]]:
    """A nats-server with Empath's users and permissions, as `empath up` starts it: its URL
    and the directory of each role's password file."""
    credentials = directory / "credentials"
    passwords = natsauth.ensure_passwords(credentials)
    config = natsauth.write_server_config(credentials / "nats-server.conf", passwords)
    port = free_port()
    argv = up.nats_argv(host="127.0.0.1", port=port, store_dir=directory / "js", config=config)
    with running(argv, port, directory / "nats-secure.log"):
        yield f"nats://127.0.0.1:{port}", credentials


S3_ACCESS_KEY = "empath-test"
S3_SECRET_KEY = "empath-test-secret"


class RestartableNats:
    """A nats-server of one test's own, which the test may stop and start again: same port,
    same JetStream directory, as a restarted server would be."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.argv = up.nats_argv(host="127.0.0.1", port=self.port, store_dir=directory / "js")
        self.log = directory / "nats-restartable.log"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        stack.enter_context(running(self.argv, self.port, self.log))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@contextlib.contextmanager
def seaweedfs(directory: Path) -> Iterator[str]:
    port = free_port()
    log = directory / "weed.log"
    # Every test has its own bucket, which SeaweedFS keeps in volumes of its own: allow many
    # small volumes (sparse files) rather than the few 1 GiB ones it sizes for by default.
    argv = up.weed_argv(
        host="127.0.0.1",
        s3_port=port,
        data_dir=directory,
        bucket=None,
        extra=("-volume.max=2000", "-master.volumeSizeLimitMB=64"),
    )
    env = {**os.environ, **up.s3_credentials_env(S3_ACCESS_KEY, S3_SECRET_KEY)}
    try:
        with running(argv, port, log, env=env):
            yield f"http://127.0.0.1:{port}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Proxy:
    """A TCP proxy on loopback to a real server; `cut()` is an outage, `restore()` its end.

    With `cut_after`, the outage begins by itself once that many bytes went through (either
    way): in the middle of a large transfer.
    """

    def __init__(self, target_port: int, *, cut_after: int | None = None) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_after = cut_after
        self._passed = 0
        self._cutting: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._pipes |= {writer, up_writer}
        tasks = {
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        }
        self._tasks |= tasks
        await asyncio.wait(tasks)
        self._tasks -= tasks

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self._passed += len(data)
                if self.cut_after is not None and self._passed > self.cut_after:
                    if self._cutting is None:
                        self._cutting = asyncio.create_task(self.cut())
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._pipes.discard(writer)

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._pipes):
            writer.transport.abort()
        pumps = list(self._tasks)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def restore(self) -> None:
        """The outage ends (and one that began by itself does not begin again)."""
        if self._cutting is not None:
            await self._cutting
        self.cut_after = None
        await self.start()

    async def close(self) -> None:
        if self._cutting is not None:
            await self._cutting
        await self.cut()


def kubeconfig(
    path: Path, server: str, users: dict[str, str], contexts: dict[str, dict[str, str]]
) -> Path:
    """A kubeconfig for an emulated cluster at `server`: users by token, contexts by name
    (`{"user": ..., "namespace": ...}`); the first context is the current one."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": next(iter(contexts)),
                "clusters": [{"name": "emulated", "cluster": {"server": server}}],
                "users": [{"name": n, "user": {"token": t}} for n, t in users.items()],
                "contexts": [
                    {"name": name, "context": {"cluster": "emulated", **context}}
                    for name, context in contexts.items()
                ],
            }
        )
    )
    return path


async def probe_ok(url: str, process: subprocess.Popen[str], timeout: float = 20) -> httpx.Response:
    """Ask `url` as a kubelet's probe would, until it answers 200; fail if the process exits."""
    async with httpx.AsyncClient() as http:

        async def probe() -> httpx.Response | httpx.TransportError:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"exited with {process.returncode}: {output[-2000:]}")
            try:
                return await http.get(url)
            except httpx.TransportError as error:
                return error

        answer = await eventually(
            probe,
            until=lambda a: isinstance(a, httpx.Response) and a.status_code == 200,
            what=f"{url} to answer 200",
            timeout=timeout,
        )
        assert isinstance(answer, httpx.Response)
        return answer


@contextlib.asynccontextmanager
async def continuing_plugin(port: int, path: str = "/hook") -> AsyncIterator[None]:
    """An HTTP plugin on loopback `port` that answers every call at `path` with continue
    (a plugin that comes up, after its calls failed)."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"version": 1, "action": "continue"})

    app = web.Application()
    app.router.add_post(path, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
    finally:
        await runner.cleanup()
