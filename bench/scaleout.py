"""Scale-out benchmark: delivery throughput with 1, 2 and 4 delivery workers, each a process.

NATS (with its users, as `empath up` runs it), SeaweedFS, ingress, the spool, the delivery
workers and a sink that answers each message 100 ms after its DATA each run as processes of
their own. For each number of workers: the queue is frozen, BENCH_SCALE_MESSAGES messages are
submitted, the workers are started, the queue is unfrozen, and the rate at which messages reach
the sink is taken between 10 % and 90 % of them. Two loads, both with default delivery settings
(20 attempts in flight per worker, 20 deliveries at once per domain for the installation):
recipients spread over 50 domains (a relay to the Internet), and one domain (a smart host),
where the per-domain limit is the ceiling however many workers run.

Then the cost of the shared per-domain limits: simulated deliveries through
`limits.Shared` from two workers (two NATS connections), counting KV round trips and CPU.

    python3 -m uv run python bench/scaleout.py
    BENCH_SCALE_MESSAGES=3000 BENCH_SCALE_WORKERS=1,2,4 python3 -m uv run python bench/scaleout.py
    BENCH_SCALE_DELAY=0.5 python3 -m uv run python bench/scaleout.py   # a slower remote

On a machine whose cores are busy, the CPU is the ceiling before the workers are; a slower
remote (BENCH_SCALE_DELAY) shows how the workers add up while the CPU is not yet the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from empath.core import bus, flags, names, natsauth, settings, up
from empath.delivery import limits

sys.path.insert(0, str(Path(__file__).parent))
from ingress import environment

MESSAGES = int(os.environ.get("BENCH_SCALE_MESSAGES", "1500"))
WORKERS = [int(n) for n in os.environ.get("BENCH_SCALE_WORKERS", "1,2,4").split(",")]
DOMAINS = 50
SINK_DELAY = float(os.environ.get("BENCH_SCALE_DELAY", "0.1"))  # seconds
SUBMITTERS = 20
BODY = b"Subject: scale-out\r\n\r\n" + (b"y" * 78 + b"\r\n") * 50  # about 4 KiB
EMPATH = str(Path(sys.executable).parent / "empath")


# -- the sink: a process of its own ------------------------------------------------------------


async def sink(port: int, record: Path, delay: float) -> None:
    """SMTP that takes everything and answers each DATA after `delay`; arrival times go to
    `record`, one a line."""
    arrivals: list[str] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink.test ESMTP\r\n")
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n")
                    writer.write(b"250-SMTPUTF8\r\n250 SIZE 100000000\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    await asyncio.sleep(delay)
                    arrivals.append(f"{time.time():.6f}\n")
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port)
    async with server:
        while True:
            await asyncio.sleep(0.2)
            if arrivals:
                taken, arrivals[:] = list(arrivals), []
                with record.open("a") as out:
                    out.writelines(taken)


# -- the system, process by process ----------------------------------------------------------


def wait_ready(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not become ready")


class Installation:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.credentials = tmp / "credentials"
        self.ports = {name: up.free_port() for name in ("nats", "s3", "smtp", "sink")}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.arrivals = tmp / "arrivals"
        domains = [f"d{n}.test" for n in range(DOMAINS)] + ["one.test"]
        self.env = environment(
            EMPATH_NATS_URL=f"nats://127.0.0.1:{self.ports['nats']}",
            EMPATH_S3_ENDPOINT=f"http://127.0.0.1:{self.ports['s3']}",
            EMPATH_SMTP_LISTEN=f"127.0.0.1:{self.ports['smtp']}",
            EMPATH_TLS_POLICY="none",
            EMPATH_MX_OVERRIDES=",".join(f"{d}=127.0.0.1:{self.ports['sink']}" for d in domains),
        )

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def service(self, service: str, name: str) -> subprocess.Popen[bytes]:
        health = up.free_port()
        env = {
            **self.env,
            "EMPATH_NATS_USER": service,
            "EMPATH_NATS_PASSWORD_FILE": str(natsauth.password_file(self.credentials, service)),
            "EMPATH_HEALTH_LISTEN": f"127.0.0.1:{health}",
        }
        process = self.start(name, [EMPATH, service], env)
        wait_ready(f"http://127.0.0.1:{health}/readyz", process, name)
        return process

    def admin(self) -> settings.Settings:
        config = settings.load(
            environment=False,
            nats_url=self.env["EMPATH_NATS_URL"],
            data_dir=self.tmp,
        )
        return up.role_settings(config, natsauth.ADMIN, self.credentials)

    def boot(self) -> None:
        passwords = natsauth.ensure_passwords(self.credentials)
        config = natsauth.write_server_config(self.credentials / "nats.conf", passwords)
        argv = up.nats_argv(
            host="127.0.0.1", port=self.ports["nats"], store_dir=self.tmp / "nats", config=config
        )
        self.start("nats", argv, self.env)
        (self.tmp / "s3").mkdir()
        argv = up.weed_argv(
            host="127.0.0.1", s3_port=self.ports["s3"], data_dir=self.tmp / "s3", bucket="empath"
        )
        self.start("s3", argv, {**self.env, **up.s3_credentials_env("empath", "empath-dev-secret")})
        sink_argv = [
            sys.executable,
            __file__,
            "--sink",
            str(self.ports["sink"]),
            str(self.arrivals),
        ]
        self.start("sink", sink_argv, self.env)
        time.sleep(2.0)
        asyncio.run(up.prepare(self.admin()))
        self.service("spool", "spool")
        self.service("ingress", "ingress")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()

    async def _call(self, subject: str) -> dict[str, Any]:
        connection = await bus.connect(self.admin(), name="bench", retry=False)
        try:
            reply = await connection.nc.request(subject, b"{}", timeout=30)
            return dict(json.loads(reply.data))
        finally:
            await connection.close()

    async def _freeze(self, frozen: bool) -> None:
        connection = await bus.connect(self.admin(), name="bench", retry=False)
        try:
            await flags.set_frozen(await connection.key_value(names.FLAGS_BUCKET), frozen)
        finally:
            await connection.close()

    def freeze(self, frozen: bool) -> None:
        asyncio.run(self._freeze(frozen))

    def counts(self) -> dict[str, int]:
        return dict(asyncio.run(self._call(names.QUERY_COUNTS_SUBJECT))["counts"])


def submit(port: int, recipients: list[str]) -> None:
    """The messages over SMTP, SUBMITTERS sessions at once."""

    def one_session(mine: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for recipient in mine:
                client.sendmail("sender@example.org", [recipient], BODY)

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        list(pool.map(one_session, [recipients[n::SUBMITTERS] for n in range(SUBMITTERS)]))


def arrival_times(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def steady_rate(times: list[float]) -> float:
    """Messages per second between the 10th and the 90th percentile of the arrivals."""
    times = sorted(times)
    low, high = times[len(times) // 10], times[len(times) * 9 // 10]
    return (len(times) * 8 // 10) / (high - low)


def run(system: Installation, workers: int, recipients: list[str]) -> float:
    system.arrivals.unlink(missing_ok=True)
    system.freeze(True)
    queued_before = system.counts().get("queued", 0)
    submit(system.ports["smtp"], recipients)
    deadline = time.monotonic() + 300
    while system.counts().get("queued", 0) < queued_before + len(recipients):
        if time.monotonic() > deadline:
            raise SystemExit("the messages did not all reach the queue")
        time.sleep(0.5)
    started = [system.service("delivery", f"delivery-{workers}-{n}") for n in range(workers)]
    system.freeze(False)
    deadline = time.monotonic() + 600
    while len(arrival_times(system.arrivals)) < len(recipients):
        if time.monotonic() > deadline:
            raise SystemExit("the messages did not all reach the sink")
        time.sleep(0.5)
    for process in started:
        process.send_signal(signal.SIGTERM)
    for process in started:
        process.wait(60)
        system.processes.remove(process)
    return steady_rate(arrival_times(system.arrivals))


# -- the cost of the shared limits -----------------------------------------------------------


async def limits_cost(system: Installation, *, domains: int, messages: int) -> tuple[float, float]:
    """KV round trips and CPU milliseconds per message of `limits.Shared` for two workers,
    each with 20 simulated deliveries of 10 ms in flight, over `domains` domains."""
    config = system.admin().model_copy(update={"delivery_rate_limits": {}})
    connections = [await bus.connect(config, name=f"cost-{n}", retry=False) for n in range(2)]
    sharing = []
    for connection in connections:
        kv = await connection.key_value(names.LIMITS_BUCKET, ttl=names.LIMITS_TTL_SECONDS)
        shared = limits.Shared(kv, settings=config)
        shared.start()
        sharing.append(shared)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(messages):
        queue.put_nowait(n)

    async def deliver(shared: limits.Shared) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            async with shared.slot(f"cost{n % domains}.test"):
                await shared.pace(f"cost{n % domains}.test")
                await asyncio.sleep(0.01)

    cpu = time.process_time()
    await asyncio.gather(*(deliver(shared) for shared in sharing for _ in range(20)))
    cpu = time.process_time() - cpu
    trips = sum(s.records.reads + s.records.writes for s in sharing)
    for shared in sharing:
        await shared.close()
    for connection in connections:
        await connection.close()
    return trips / messages, 1000 * cpu / messages


def main() -> None:
    if sys.argv[1:2] == ["--sink"]:
        asyncio.run(sink(int(sys.argv[2]), Path(sys.argv[3]), SINK_DELAY))
        return
    spread = [f"u{n}@d{n % DOMAINS}.test" for n in range(MESSAGES)]
    single = [f"u{n}@one.test" for n in range(MESSAGES)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="empath-scaleout-", dir="/tmp") as name:
        system = Installation(Path(name))
        try:
            system.boot()
            for workers in WORKERS:
                rows.append((workers, run(system, workers, spread), run(system, workers, single)))
            costs = [
                (label, *asyncio.run(limits_cost(system, domains=d, messages=4000)))
                for label, d in (("one busy domain", 1), ("a new domain each message", 4000))
            ]
        finally:
            system.stop()
    print()
    print(
        f"scale-out benchmark ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}): {MESSAGES} messages of {len(BODY)} bytes per run, "
        f"a sink answering each after {SINK_DELAY * 1000:.0f} ms, default delivery settings"
    )
    print(f"{'workers':>8}  {'50 domains':>12}  {'speed-up':>8}  {'one domain':>12}")
    for workers, many, one in rows:
        print(f"{workers:>8}  {many:8.1f} /s  {many / rows[0][1]:7.2f}x  {one:8.1f} /s")
    print()
    print("shared per-domain limits, two workers, 20 deliveries each in flight:")
    for label, trips, cpu in costs:
        print(f"  {label:<28} {trips:5.2f} KV round trips and {cpu:5.3f} ms CPU per message")


if __name__ == "__main__":
    main()
