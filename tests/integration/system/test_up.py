"""`empath up` as a user runs it: one command, a ready line, mail in, a restart keeps the queue."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import minio
import minio.error
import nats
import nats.errors
import pytest

from empath.core import natsauth
from empath.core import up as up_module
from tests import servers
from tests.waiting import eventually

EMPATH = str(Path(sys.executable).parent / "empath")


class Up:
    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> str:
        self.process = subprocess.Popen(
            [EMPATH, "up"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.data_dir.parent,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("empath is ready."):
                # Then come the two lines that tell how to point empathctl at it.
                self.output += [self.process.stdout.readline() for _ in range(2)]
                return line
        self.stop()
        raise AssertionError("empath up never got ready:\n" + "".join(self.output))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            assert self.process.stdout is not None
            self.output.extend(self.process.stdout.readlines())
        return code


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    ports = {name: servers.free_port() for name in ("smtp", "nats", "s3", "control")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")}
    env.update(
        EMPATH_DATA_DIR=str(tmp_path / "data"),
        EMPATH_SMTP_LISTEN=f"127.0.0.1:{ports['smtp']}",
        EMPATH_UP_NATS_LISTEN=f"127.0.0.1:{ports['nats']}",
        EMPATH_UP_S3_LISTEN=f"127.0.0.1:{ports['s3']}",
        EMPATH_CONTROL_LISTEN=f"127.0.0.1:{ports['control']}",
        EMPATH_RELAY_DOMAINS="example.com",
        EMPATH_HOSTNAME="mx.test",
        # example.com's mail goes to a port where nothing listens: every attempt is deferred.
        EMPATH_MX_OVERRIDES=f"example.com=127.0.0.1:{servers.free_port()}",
        EMPATH_RETRY_SCHEDULE="0,3600",
    )
    return env, ports


async def queue_state(nats_port: int, data_dir: Path) -> dict[str, object]:
    """Ask the spool as the control service does, with the credentials `empath up` made."""
    nc = await nats.connect(
        f"nats://127.0.0.1:{nats_port}",
        user="control",
        password=natsauth.password_file(up_module.credentials_dir(data_dir), "control")
        .read_text()
        .strip(),
        inbox_prefix=natsauth.inbox_prefix("control"),
    )
    try:
        counts = await nc.request("empath.api.queue.counts", b"{}", timeout=10)
        listed = await nc.request("empath.api.queue.list", b"{}", timeout=10)
    finally:
        await nc.close()
    return {"counts": json.loads(counts.data)["counts"], "items": json.loads(listed.data)["items"]}


async def running_up(env: dict[str, str], tmp_path: Path) -> tuple[Up, subprocess.Popen[str]]:
    """`empath up` started and ready, and its process."""
    up = Up(env, tmp_path / "data")
    await asyncio.to_thread(up.start)
    assert up.process is not None
    return up, up.process


def port_is_closed(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_up_runs_the_system_and_a_restart_finds_the_queue_as_it_was(
    up_env: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, ports = up_env
    up = Up(env, tmp_path / "data")
    ready = await asyncio.to_thread(up.start)
    assert f"ingress: smtp on 127.0.0.1:{ports['smtp']}" in ready

    def send() -> str:
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as client:
            client.ehlo("client.test")
            code, reply = client.docmd("MAIL FROM:<sender@example.org>")
            assert code == 250
            client.rcpt("user@example.com")
            code, reply = client.data(b"Subject: swaks-like\r\n\r\nhello\r\n")
            assert code == 250, reply
            return reply.decode()

    reply = await asyncio.to_thread(send)
    assert reply.startswith("2.0.0 Ok: queued as ")
    queue_id = reply.rsplit(" ", 1)[1]

    # empath up prints how to point empathctl at its control API, with a fresh token.
    hint = next(line for line in up.output if line.startswith("empathctl: export "))
    exports = dict(part.split("=", 1) for part in hint.split()[2:4])
    assert exports["EMPATHCTL_URL"] == f"http://127.0.0.1:{ports['control']}"
    listed = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "empathctl"), "-o", "json", "queue", "list"],
        env={**env, **exports},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert queue_id in listed.stdout, listed.stderr
    state = await eventually(
        lambda: queue_state(ports["nats"], tmp_path / "data"),
        until=lambda state: state["counts"]["deferred"] == 1,  # type: ignore[index]
        what="the message to be deferred",
        timeout=20,
    )
    items = state["items"]
    assert [i["id"] for i in items] == [queue_id]  # type: ignore[attr-defined]
    assert items[0]["attempts"] == 1  # type: ignore[index]
    assert items[0]["last_reply"].startswith("451 4.4.1 Cannot connect to 127.0.0.1")  # type: ignore[index]

    assert await asyncio.to_thread(up.stop) == 0
    assert "empath.core.up: stopped" in "".join(up.output)
    for port in ports.values():
        assert port_is_closed(port), f"port {port} still open after shutdown"

    credentials = up_module.credentials_dir(tmp_path / "data")
    passwords = {path.name: path.read_text() for path in credentials.glob("*.password")}
    s3_secret = (credentials / "s3-secret-key").read_text().strip()
    # The event keys that signed and checked the message's `received` (it was queued).
    keys = {path.name: path.read_bytes() for path in credentials.glob("event-*")}
    assert sorted(keys) == ["event-ingress.key", "event-spool.key", "event-trusted.pub"]
    restarted = Up(env, tmp_path / "data")
    await asyncio.to_thread(restarted.start)
    again = await queue_state(ports["nats"], tmp_path / "data")
    assert again["items"] == state["items"]
    # The NATS credentials were kept, private, and NATS takes no anonymous client.
    assert {path.name: path.read_text() for path in credentials.glob("*.password")} == passwords
    assert {path.name: path.read_bytes() for path in credentials.glob("event-*")} == keys
    assert {oct(path.stat().st_mode & 0o777) for path in credentials.iterdir()} == {"0o600"}
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(f"nats://127.0.0.1:{ports['nats']}", allow_reconnect=False)
    # The object store it started takes the secret it made (and kept), not the built-in one.
    assert (credentials / "s3-secret-key").read_text().strip() == s3_secret

    def bucket_seen(secret_key: str) -> bool:
        client = minio.Minio(
            f"127.0.0.1:{ports['s3']}", access_key="empath", secret_key=secret_key, secure=False
        )
        return client.bucket_exists("empath")

    assert await asyncio.to_thread(bucket_seen, s3_secret)
    with pytest.raises(minio.error.S3Error):
        await asyncio.to_thread(bucket_seen, "empath-dev-secret")
    assert await asyncio.to_thread(restarted.stop, signal.SIGINT) == 0


async def test_up_uses_external_nats_and_object_store_when_given(
    up_env: tuple[dict[str, str], dict[str, int]],
    tmp_path: Path,
    nats_url: str,
    s3_endpoint: str,
    bucket: str,
) -> None:
    env, ports = up_env
    env.update(
        EMPATH_NATS_URL=nats_url,
        EMPATH_S3_ENDPOINT=s3_endpoint,
        EMPATH_S3_ACCESS_KEY=servers.S3_ACCESS_KEY,
        EMPATH_S3_SECRET_KEY=servers.S3_SECRET_KEY,
        EMPATH_S3_BUCKET=bucket,
    )
    up = Up(env, tmp_path / "data")
    ready = await asyncio.to_thread(up.start)
    assert f"NATS {nats_url}" in ready
    assert f"S3 {s3_endpoint}" in ready
    assert port_is_closed(ports["nats"])
    assert port_is_closed(ports["s3"])
    assert not (tmp_path / "data" / "logs").exists()
    assert await asyncio.to_thread(up.stop) == 0


async def test_a_doubled_ctrl_c_still_stops_gracefully(
    up_env: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, _ = up_env
    up, process = await running_up(env, tmp_path)
    # A terminal's Ctrl-C, delivered once by the terminal and once more by a wrapper.
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)  # the scenario: a second signal a moment later, while stopping
    process.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(process.wait, 60) == 0
    assert process.stdout is not None
    log = "".join(up.output) + process.stdout.read()
    for service in ("ingress", "spool", "delivery", "control"):
        assert f"empath.{service}: stopped" in log
    assert "empath.core.up: stopped" in log


def children_of(pid: int) -> dict[str, int]:
    """The service processes `empath up` runs, by service name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and len(argv) >= 4 and b"empath.core.cli" in argv[2]:
            found[argv[3].decode()] = int(entry.name)
    return found


async def test_each_service_runs_in_its_own_process_and_one_killed_comes_back(
    up_env: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, ports = up_env
    up, process = await running_up(env, tmp_path)
    services = children_of(process.pid)
    assert set(services) == {"ingress", "spool", "delivery", "control"}

    os.kill(services["ingress"], signal.SIGKILL)

    def accepts() -> bool:
        try:
            with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as client:
                return client.ehlo("client.test")[0] == 250
        except OSError:
            return False

    await eventually(
        lambda: asyncio.to_thread(accepts),
        until=bool,
        what="ingress to be started again",
        timeout=30,
    )
    again = children_of(process.pid)
    assert again["ingress"] != services["ingress"]
    assert again["spool"] == services["spool"]
    assert await asyncio.to_thread(up.stop) == 0
    assert "ingress exited with code -9: starting it again" in "".join(up.output)


def descendants(pid: int) -> dict[int, str]:
    """Every process `empath up` started (services, nats-server, SeaweedFS): pid -> command."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(stat[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
    return {child: command.decode(errors="replace") for child, command in found.items()}


def running(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


async def test_empath_up_killed_leaves_no_process_behind(
    up_env: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, ports = up_env
    env = {name: value for name, value in env.items() if name != "GOMAXPROCS"}
    _, process = await running_up(env, tmp_path)
    children = descendants(process.pid)
    commands = " ".join(children.values())
    assert "nats-server" in commands, commands
    assert "weed" in commands, commands
    assert len(children) == 6, commands  # four services, NATS and the object store
    go_servers = [
        pid for pid, command in children.items() if "nats-server" in command or "weed" in command
    ]
    small = len(os.sched_getaffinity(0)) <= 2  # one Go thread each there (up.go_env)
    for pid in go_servers:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        assert (b"GOMAXPROCS=1" in environ) is small, environ

    process.kill()
    process.wait(10)

    await eventually(
        lambda: [pid for pid in children if running(pid)],
        until=lambda left: not left,
        what="every process of the killed empath up to stop",
        timeout=40,
    )
    for port in ports.values():
        assert port_is_closed(port)


async def test_a_service_that_cannot_start_stops_empath_up_naming_it(
    up_env: tuple[dict[str, str], dict[str, int]], tmp_path: Path
) -> None:
    env, ports = up_env
    up = Up(env, tmp_path / "data")
    with socket.socket() as taken:  # someone else listens on the SMTP port
        taken.bind(("127.0.0.1", ports["smtp"]))
        taken.listen()
        with pytest.raises(AssertionError, match="never got ready"):
            await asyncio.to_thread(up.start)
    assert up.process is not None
    assert up.process.returncode not in (None, 0)
    output = "".join(up.output)
    assert "ingress exited with code 2 before it was ready" in output
    assert (
        f"empath ingress: EMPATH_SMTP_LISTEN: cannot listen on 127.0.0.1:{ports['smtp']}" in output
    )
