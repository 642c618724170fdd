"""Relay benchmark: Empath and Postfix relaying the same load to the same `smtp-sink`.

smtp-source -> MTA -> smtp-sink (as the remote MX), on this machine. Each MTA is timed from the
first message sent until the last one has been delivered to the sink (Empath: every message
`delivered` in the queue state; Postfix: every message `status=sent` in its log). Postfix runs
as a private instance (its own config and queue under a temporary directory) with the stock
settings a relay would have; Debian's `postfix` package provides it and the two load tools.

Empath runs twice, in one run: telemetry off (no exporter; `/metrics` is served anyway) and on
(metrics and traces pushed over OTLP/HTTP to a minimal collector here, every 5 s, which answers
200 and counts what it got), so the cost of telemetry is measured on the same machine at the
same time. `BENCH_ROUNDS` repeats the pair, in turn off first and on first (the median is
shown); `BENCH_TELEMETRY=off` skips the run with telemetry.

    make bench-relay                      # defaults below
    BENCH_MESSAGES=5000 make bench-relay
"""

from __future__ import annotations

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SBIN = Path("/usr/sbin")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
TELEMETRY = os.environ.get("BENCH_TELEMETRY", "compare") != "off"
# How often the run with telemetry exports (milliseconds; `empath up` passes the environment on).
os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "5000")
os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "5000")

sys.path.insert(0, str(Path(__file__).parent))
from ingress import MESSAGES, SESSIONS, SIZE, counts, free_port, smtp_source, start_up  # noqa: E402


def wait_until(done: Callable[[], bool], what: str, timeout: float = 600) -> None:
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


def run_empath(tmp: Path, sink_port: int, *, otlp_endpoint: str | None = None) -> float:
    ports = {name: free_port() for name in ("smtp", "nats", "s3")}
    data = tmp / f"empath-{len(list(tmp.glob('empath-*')))}"
    telemetry = {"otlp_endpoint": otlp_endpoint} if otlp_endpoint else {}
    process = start_up(
        data,
        ports,
        hostname="bench-empath.test",
        mx_overrides=f"sink.test=127.0.0.1:{sink_port}",
        delivery_rate_per_domain="0",
        delivery_max_connections_per_domain="20",
        # Not the default 8025: another `empath up` on this machine may hold it.
        control_listen=f"127.0.0.1:{free_port()}",
        **telemetry,
    )
    try:
        started = time.perf_counter()
        smtp_source(ports["smtp"], "user@sink.test")
        wait_until(lambda: counts(data, ports["nats"])["delivered"] >= MESSAGES, "Empath")
        return time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


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
    off: list[float] = []
    on: list[float] = []
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
            postfix = run_postfix(tmp, sink_port)
        finally:
            sink.terminate()
            sink.wait()
    empath = statistics.median(off)
    print()
    print(
        f"relay benchmark ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})"
    )
    print(
        f"smtp-source: {MESSAGES} messages of {SIZE} bytes over {SESSIONS} sessions -> MTA "
        f"-> smtp-sink" + (f"; median of {ROUNDS} rounds" if ROUNDS > 1 else "")
    )
    print(f"empath   {MESSAGES / empath:8.1f} messages/s   ({empath:.1f} s until all delivered)")
    if on:
        traced = statistics.median(on)
        exports = {path: len(sizes) for path, sizes in sorted(Collector.received.items())}
        kib = sum(sum(sizes) for sizes in Collector.received.values()) / 1024
        print(
            f"  + OTLP {MESSAGES / traced:8.1f} messages/s   ({traced:.1f} s; telemetry costs "
            f"{(1 - empath / traced) * 100:.1f} % of throughput)"
        )
        print(f"         exported: {exports}, {kib:.0f} KiB")
        if ROUNDS > 1:
            rounds = ", ".join(
                f"{MESSAGES / a:.1f}/{MESSAGES / b:.1f}" for a, b in zip(off, on, strict=True)
            )
            print(f"         each round, off/on: {rounds} messages/s")
    print(f"postfix  {MESSAGES / postfix:8.1f} messages/s   ({postfix:.1f} s until all delivered)")
    print(f"ratio    {postfix / empath:8.2f}  (empath rate / postfix rate)")


if __name__ == "__main__":
    main()
