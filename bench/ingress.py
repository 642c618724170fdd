"""Ingress benchmark: accept rate and transaction latency against `empath up`.

Load comes from Postfix's `smtp-source` (Debian package `postfix`); latency is measured by a
second client (smtplib) that times each transaction from MAIL to the `250 ... queued` reply,
once on an idle system and once while smtp-source runs. Every accepted message is checked to
be in the queue state before the numbers are printed.

    make bench-ingress                      # defaults below
    BENCH_MESSAGES=20000 make bench-ingress
    BENCH_PLUGINS=http make bench-ingress   # with one HTTP plugin at rcpt and one at data
    BENCH_NATS_SYNC=always,interval make bench-ingress   # the cost of syncing every write

With `BENCH_PLUGINS=http`, the reference plugin of `examples/http_plugin.py` runs as its own
process and ingress calls it at every RCPT (one plugin) and every DATA (another): what the
plugin runtime costs when a plugin answers in about a millisecond.


`BENCH_NATS_SYNC` lists the `EMPATH_UP_NATS_SYNC` modes to run one after the other (default:
`always`, what `empath up` does).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nats
import nats.aio.client

from empath.core import natsauth, up

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "5000"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "20"))
SIZE = int(os.environ.get("BENCH_SIZE", "4096"))
PROBES = int(os.environ.get("BENCH_PROBES", "300"))
PLUGINS = os.environ.get("BENCH_PLUGINS", "")
SYNC_MODES = os.environ.get("BENCH_NATS_SYNC", "always").split(",")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "http_plugin.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(**values: str) -> dict[str, str]:
    """The environment of a benchmarked Empath: none of this machine's own `EMPATH_*`, the
    settings every benchmark shares, and `values` (`EMPATH_*` names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPATH_")}
    env.update(
        EMPATH_HOSTNAME="bench.test",
        EMPATH_LOG_LEVEL="WARNING",
        EMPATH_MAX_CONNECTIONS_PER_IP="1000",
    )
    env.update(values)
    return env


def start_up(data: Path, ports: dict[str, int], **settings: str) -> subprocess.Popen[str]:
    """`empath up` on the given ports, returning once it is ready."""
    env = environment(
        EMPATH_DATA_DIR=str(data),
        EMPATH_SMTP_LISTEN=f"127.0.0.1:{ports['smtp']}",
        EMPATH_UP_NATS_LISTEN=f"127.0.0.1:{ports['nats']}",
        EMPATH_UP_S3_LISTEN=f"127.0.0.1:{ports['s3']}",
        EMPATH_RELAY_DOMAINS="example.com",
    )
    env.update({f"EMPATH_{name.upper()}": value for name, value in settings.items()})
    empath = str(Path(sys.executable).parent / "empath")
    data.mkdir(parents=True, exist_ok=True)
    log = data / "empath-up.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            [empath, "up"], env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("empath is ready."):
            return process
    raise SystemExit(f"empath up did not start:\n{log.read_text()[-3000:]}")


def start_plugin(port: int) -> subprocess.Popen[bytes]:
    """The reference HTTP plugin, in a process of its own; returns once it listens."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the example plugin did not start")


def plugin_settings(port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/hook"
    declared = [
        {"name": "rcpt-check", "hooks": ["rcpt"], "url": url, "timeout": 5},
        {"name": "data-check", "hooks": ["data"], "url": url, "timeout": 5},
    ]
    return {"plugins": json.dumps(declared)}


def smtp_source(port: int, recipient: str) -> None:
    """Postfix's load generator: MESSAGES messages of SIZE bytes over SESSIONS sessions."""
    subprocess.run(
        [
            SMTP_SOURCE,
            "-s",
            str(SESSIONS),
            "-m",
            str(MESSAGES),
            "-l",
            str(SIZE),
            "-f",
            "sender@example.org",
            "-t",
            recipient,
            f"127.0.0.1:{port}",
        ],
        check=True,
    )


def probe(
    port: int,
    count: int,
    stop: threading.Event | None = None,
    *,
    recipient: str = "user@example.com",
) -> list[float]:
    """Seconds per transaction (MAIL .. queued), on one connection."""
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: probe\r\n\r\n" + line * (SIZE // len(line))
    timings = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("probe.test")
        while len(timings) < count and not (stop and stop.is_set()):
            started = time.perf_counter()
            client.sendmail("probe@example.org", [recipient], body)
            timings.append(time.perf_counter() - started)
    return timings


def percentiles(timings: list[float]) -> str:
    cuts = statistics.quantiles(timings, n=100)
    return f"p50 {cuts[49] * 1000:6.1f} ms   p99 {cuts[98] * 1000:6.1f} ms   (n={len(timings)})"


async def connect(data: Path, nats_port: int) -> nats.aio.client.Client:
    """NATS as the admin user `empath up` made in its data directory (anonymous clients are
    refused)."""
    directory = up.credentials_dir(data)
    password = natsauth.password_file(directory, natsauth.ADMIN).read_text().strip()
    return await nats.connect(
        f"nats://127.0.0.1:{nats_port}", user=natsauth.ADMIN, password=password
    )


async def ask(data: Path, nats_port: int, subject: str) -> dict[str, Any]:
    """One request to the spool's query API (`empath.api.queue.*`)."""
    nc = await connect(data, nats_port)
    try:
        reply = await nc.request(f"empath.api.queue.{subject}", b"{}", timeout=60)
        return dict(json.loads(reply.data))
    finally:
        await nc.close()


def counts(data: Path, nats_port: int) -> dict[str, int]:
    """Messages in the queue by state, and in total."""
    return dict(asyncio.run(ask(data, nats_port, "counts"))["counts"])


def measure(sync: str) -> tuple[float, list[float], list[float], int]:
    """One run of `empath up` with NATS syncing as `sync` says: the seconds smtp-source took,
    the idle and the loaded latencies, and how many messages were checked in the queue."""
    ports = {name: free_port() for name in ("smtp", "nats", "s3")}
    with tempfile.TemporaryDirectory(prefix="empath-bench-") as tmp:
        data = Path(tmp) / "data"
        plugin = None
        settings: dict[str, str] = {"up_nats_sync": sync}
        if PLUGINS:
            plugin_port = free_port()
            plugin = start_plugin(plugin_port)
            settings |= plugin_settings(plugin_port)
        process = start_up(data, ports, **settings)
        try:
            # Measure intake alone: with the queue frozen, delivery starts no attempt.
            asyncio.run(ask(data, ports["nats"], "freeze"))
            idle = probe(ports["smtp"], PROBES)
            stop = threading.Event()
            loaded: list[float] = []
            prober = threading.Thread(
                target=lambda: loaded.extend(probe(ports["smtp"], 10**9, stop)), daemon=True
            )
            prober.start()
            started = time.perf_counter()
            smtp_source(ports["smtp"], "user@example.com")
            elapsed = time.perf_counter() - started
            stop.set()
            prober.join()
            expected = PROBES + MESSAGES + len(loaded)
            deadline = time.monotonic() + 120
            while (total := counts(data, ports["nats"])["total"]) < expected:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {total} of {expected} accepted messages are queued")
                time.sleep(0.5)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            if plugin is not None:
                plugin.terminate()
                plugin.wait(10)
    return elapsed, idle, loaded, expected


def main() -> None:
    runs = {sync: measure(sync) for sync in SYNC_MODES}
    print()
    print(
        f"empath ingress benchmark ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})"
    )
    print(f"smtp-source: {MESSAGES} messages of {SIZE} bytes over {SESSIONS} parallel sessions")
    print(
        "plugins: one HTTP plugin at rcpt, one at data (examples/http_plugin.py)"
        if PLUGINS
        else "plugins: none"
    )
    for sync, (elapsed, idle, loaded, expected) in runs.items():
        print(f"NATS sync: {sync}")
        print(f"accept rate          {MESSAGES / elapsed:8.1f} messages/s   ({elapsed:.1f} s)")
        print(f"latency, idle        {percentiles(idle)}")
        print(f"latency, under load  {percentiles(loaded)}")
        print(f"queue state checked: all {expected} accepted messages recorded")


if __name__ == "__main__":
    main()
