"""Relay benchmark: Empath and Postfix relaying the same load to the same `smtp-sink`.

smtp-source -> MTA -> smtp-sink (as the remote MX), on this machine. Each MTA is timed from the
first message sent until the last one has been delivered to the sink (Empath: every message
`delivered` in the queue state; Postfix: every message `status=sent` in its log). Postfix runs
as a private instance (its own config and queue under a temporary directory) with the stock
settings a relay would have; Debian's `postfix` package provides it and the two load tools.
Empath runs with its default settings (only the MX override that points the sink's domain at
`smtp-sink`).

Printed for Empath: the rate end to end, the acceptance latency (a second client times each of
its transactions while the load runs: p50 and p99), the peak memory (RSS) of each service's
process and the CPU each process spent per message; then the same run with `BENCH_QUEUED`
messages (default 100,000; 0 skips it) already waiting in the queue, deferred and due in an
hour: the queue-depth table. Then Postfix, and the ratio.

    make bench-relay                          # defaults below
    BENCH_MESSAGES=5000 make bench-relay
    BENCH_TELEMETRY=compare make bench-relay  # also with telemetry exported over OTLP
    BENCH_NATS_CLUSTER=1 make bench-relay     # also on a 3-node NATS cluster, 3 replicas
    BENCH_NATS_SYNC=interval make bench-relay # NATS syncing on its interval (not the default)

With `BENCH_TELEMETRY=compare`, Empath also runs with telemetry on (metrics and traces pushed
over OTLP/HTTP to a minimal collector here, every 5 s), so the cost of telemetry is measured on
the same machine at the same time; `BENCH_ROUNDS` repeats the pair, in turn off first and on
first (the median is shown). With `BENCH_NATS_CLUSTER=1` Empath also runs on three nats-server
processes routed on this machine (JetStream at three replicas, NATS's default syncing, as a
production cluster runs): the difference is the cost of replication (here without a network
between the nodes, and with all three on the same two cores). The scale-out table (delivery
workers as separate processes) is `bench/scaleout.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nats

SBIN = Path("/usr/sbin")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
TELEMETRY = os.environ.get("BENCH_TELEMETRY", "") == "compare"
CLUSTER = os.environ.get("BENCH_NATS_CLUSTER", "") not in {"", "0"}
# `EMPATH_UP_NATS_SYNC` for Empath's own NATS; unset: the default (every write synced).
NATS_SYNC = os.environ.get("BENCH_NATS_SYNC", "")
if NATS_SYNC not in {"", "always", "interval"}:
    raise SystemExit(f"BENCH_NATS_SYNC: {NATS_SYNC!r} is neither always nor interval")
QUEUED = int(os.environ.get("BENCH_QUEUED", "100000"))
# How often the run with telemetry exports (milliseconds; `empath up` passes the environment on).
os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "5000")
os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "5000")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1]))  # the tests' NATS cluster
from control import fill  # noqa: E402
from empath.core import queue  # noqa: E402
from ingress import (  # noqa: E402
    MESSAGES,
    SESSIONS,
    SIZE,
    counts,
    free_port,
    percentiles,
    probe,
    processes,
    smtp_source,
    start_up,
)
from tests import nats_cluster as nats_cluster_module  # noqa: E402


def wait_until(done: Callable[[], bool], what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(
        [str(SBIN / "smtp-sink"), "-u", "postfix", f"127.0.0.1:{port}", "256"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return sink


@contextmanager
def nats_cluster(tmp: Path) -> Iterator[str]:
    """Three nats-server processes with routes and JetStream on loopback (anonymous clients,
    NATS's default syncing), as the tests' cluster runs them; their URLs as EMPATH_NATS_URL
    lists them."""
    with nats_cluster_module.running(tmp / "nats-cluster", sync_always=False) as cluster:
        asyncio.run(cluster.ready())
        yield cluster.url


async def delivered_on(url: str) -> int:
    nc = await nats.connect(servers=url.split(","))
    try:
        reply = await nc.request("empath.api.queue.counts", b"{}", timeout=60)
        return int(json.loads(reply.data)["counts"]["delivered"])
    finally:
        await nc.close()


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that takes every export (200) and counts requests and bytes."""

    received: dict[str, list[int]] = {}

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(size)
        self.received.setdefault(self.path, []).append(size)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Run:
    """One Empath run: seconds until all delivered, acceptance latencies, and per process
    (by name) its peak RSS in MB and CPU seconds."""

    seconds: float
    latencies: list[float]
    rss: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        return (
            int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            * os.sysconf("SC_PAGE_SIZE")
            / 1e6
        )
    except OSError:
        return 0.0


def run_empath(
    tmp: Path,
    sink_port: int,
    *,
    nats_url: str | None = None,
    otlp_endpoint: str | None = None,
    queued: int = 0,
) -> Run:
    """Empath relaying MESSAGES to the sink, with `queued` messages waiting (deferred, due in
    an hour) before it starts; on the NATS `empath up` starts, or on `nats_url` (a cluster)
    with three replicas; with telemetry exported to `otlp_endpoint` when given."""
    ports = {name: free_port() for name in ("smtp", "nats", "s3")}
    data = tmp / f"empath-{len(list(tmp.glob('empath-*')))}"
    settings = {"nats_url": nats_url, "nats_replicas": "3"} if nats_url else {}
    if NATS_SYNC and not nats_url:
        settings["up_nats_sync"] = NATS_SYNC
    if otlp_endpoint:
        settings["otlp_endpoint"] = otlp_endpoint
    process = start_up(
        data,
        ports,
        hostname="bench-empath.test",
        mx_overrides=f"sink.test=127.0.0.1:{sink_port}",
        # Not the default 8025: another `empath up` on this machine may hold it.
        control_listen=f"127.0.0.1:{free_port()}",
        **settings,
    )

    def delivered() -> int:
        if nats_url:
            return asyncio.run(delivered_on(nats_url))
        return counts(data, ports["nats"])["delivered"]

    try:
        if queued:
            asyncio.run(fill(data, ports["nats"], queued, state=queue.State.DEFERRED))
            wait_until(lambda: counts(data, ports["nats"])["total"] >= queued, "the spool's view")
        watched = processes(process.pid)
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        run = Run(seconds=0.0, latencies=[], rss=dict.fromkeys(watched, 0.0))
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                for name, pid in watched.items():
                    run.rss[name] = max(run.rss[name], rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        prober = threading.Thread(
            target=lambda: run.latencies.extend(
                probe(ports["smtp"], 10**9, stop, recipient="probe@sink.test")
            ),
            daemon=True,
        )
        sampler.start()
        started = time.perf_counter()
        prober.start()
        smtp_source(ports["smtp"], "user@sink.test")
        stop.set()
        prober.join()
        wait_until(lambda: delivered() >= MESSAGES + len(run.latencies), "Empath")
        run.seconds = time.perf_counter() - started
        sampler.join()
        run.cpu = {name: cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        return run
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def rate(run: Run) -> float:
    """Messages per second end to end (the load and the latency probes both count)."""
    return (MESSAGES + len(run.latencies)) / run.seconds


POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = {log}
maillog_file_prefixes = /tmp, /var
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench-postfix.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink}
default_destination_concurrency_limit = 20
alias_maps =
alias_database =
"""


def run_postfix(tmp: Path, sink_port: int) -> float:
    config = tmp / "postfix"
    config.mkdir()
    port = free_port()
    log = tmp / "postfix.log"
    (config / "main.cf").write_text(
        POSTFIX_MAIN.format(
            queue=tmp / "pq",
            data=tmp / "pdata",
            log=log,
            sink=sink_port,
        )
    )
    master = Path("/etc/postfix/master.cf").read_text()
    master = master.replace(
        "smtp      inet  n       -       y       -       -       smtpd",
        f"127.0.0.1:{port} inet n - n - - smtpd",
    )
    master = "\n".join(
        line.replace("  y  ", "  n  ") if line[:1].isalpha() else line
        for line in master.splitlines()
    )
    (config / "master.cf").write_text(master + "\n")
    for directory in ("pq", "pdata"):
        (tmp / directory).mkdir()
    shutil.chown(tmp / "pdata", "postfix")
    postfix = [str(SBIN / "postfix"), "-c", str(config)]
    subprocess.run([*postfix, "check"], check=False, capture_output=True)
    started_postfix = subprocess.run([*postfix, "start"], capture_output=True, text=True)
    if started_postfix.returncode != 0:
        raise SystemExit(f"postfix did not start: {started_postfix.stderr}")
    try:
        time.sleep(1.0)
        started = time.perf_counter()
        smtp_source(port, "user@sink.test")

        def sent() -> bool:
            return log.exists() and log.read_text(errors="replace").count("status=sent") >= MESSAGES

        wait_until(sent, "Postfix")
        return time.perf_counter() - started
    finally:
        subprocess.run([*postfix, "stop"], check=False, capture_output=True)


def main() -> None:
    off: list[Run] = []
    on: list[Run] = []
    deep = replicated = None
    with (
        tempfile.TemporaryDirectory(prefix="empath-relay-", dir="/tmp") as name,
        collector() as otlp,
    ):
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        sink_port = free_port()
        sink = start_sink(sink_port)
        try:
            for index in range(ROUNDS):
                # Every other round runs telemetry first: whichever goes first is slower.
                if TELEMETRY and index % 2:
                    on.append(run_empath(tmp, sink_port, otlp_endpoint=otlp))
                off.append(run_empath(tmp, sink_port))
                if TELEMETRY and not index % 2:
                    on.append(run_empath(tmp, sink_port, otlp_endpoint=otlp))
            if QUEUED:
                deep = run_empath(tmp, sink_port, queued=QUEUED)
            if CLUSTER:
                with nats_cluster(tmp) as url:
                    replicated = run_empath(tmp, sink_port, nats_url=url)
            postfix = run_postfix(tmp, sink_port)
        finally:
            sink.terminate()
            sink.wait()
    empath = statistics.median(rate(run) for run in off)
    first = off[len(off) // 2]
    print()
    print(
        f"relay benchmark ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})"
    )
    print(
        f"smtp-source: {MESSAGES} messages of {SIZE} bytes over {SESSIONS} sessions -> MTA "
        f"-> smtp-sink" + (f"; median of {ROUNDS} rounds" if ROUNDS > 1 else "")
    )
    if NATS_SYNC:
        print(
            f"Empath's NATS syncs: {NATS_SYNC} (EMPATH_UP_NATS_SYNC"
            + ("; not the default)" if NATS_SYNC != "always" else ")")
            + ("; not on the 3-node cluster, which syncs as NATS does" if CLUSTER else "")
        )
    print(f"empath   {empath:8.1f} messages/s end to end")
    print(f"  accept latency under load  {percentiles(first.latencies)}")
    for service in sorted(first.rss):
        print(
            f"  {service:<12} peak RSS {first.rss[service]:6.1f} MB   "
            f"CPU {first.cpu[service] * 1000 / MESSAGES:5.2f} ms per message"
        )
    if deep is not None:
        print(f"queue depth ({QUEUED} messages waiting, deferred, due in an hour):")
        print(f"  empty queue        {empath:8.1f} messages/s")
        print(
            f"  {QUEUED:>7} waiting     {rate(deep):8.1f} messages/s   "
            f"({(rate(deep) / empath - 1) * 100:+.1f} %)"
        )
        for service in ("spool", "control"):
            if service in deep.rss:
                print(f"  {service:<8} peak RSS {deep.rss[service]:6.1f} MB with the queue full")
    if on:
        traced = statistics.median(rate(run) for run in on)
        exports = {path: len(sizes) for path, sizes in sorted(Collector.received.items())}
        kib = sum(sum(sizes) for sizes in Collector.received.values()) / 1024
        print(
            f"  + OTLP {traced:8.1f} messages/s   (telemetry costs "
            f"{(1 - traced / empath) * 100:.1f} % of throughput)"
        )
        print(f"         exported: {exports}, {kib:.0f} KiB")
        if ROUNDS > 1:
            rounds = ", ".join(f"{rate(a):.1f}/{rate(b):.1f}" for a, b in zip(off, on, strict=True))
            print(f"         each round, off/on: {rounds} messages/s")
    if replicated is not None:
        print(
            f"empath, 3-node NATS, 3 replicas {rate(replicated):8.1f} messages/s   "
            f"({(rate(replicated) / empath - 1) * 100:+.1f} % against one node)"
        )
    print(f"postfix  {MESSAGES / postfix:8.1f} messages/s   ({postfix:.1f} s until all delivered)")
    print(f"ratio    {empath * postfix / MESSAGES:8.2f}  (empath rate / postfix rate)")


if __name__ == "__main__":
    main()
