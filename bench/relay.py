"""Relay benchmark: Empath and Postfix relaying the same load to the same `smtp-sink`.

smtp-source -> MTA -> smtp-sink (as the remote MX), on this machine. Each MTA is timed from the
first message sent until the last one has been delivered to the sink (Empath: every message
`delivered` in the queue state; Postfix: every message `status=sent` in its log). Postfix runs
as a private instance (its own config and queue under a temporary directory) with the stock
settings a relay would have; Debian's `postfix` package provides it and the two load tools.

    make bench-relay                      # defaults below
    BENCH_MESSAGES=5000 make bench-relay
    BENCH_NATS_CLUSTER=1 make bench-relay # Empath also on a 3-node NATS cluster, 3 replicas

With `BENCH_NATS_CLUSTER=1` Empath runs a second time on three nats-server processes routed on
this machine (JetStream at three replicas, NATS's default syncing, as a production cluster
runs), next to the one node `empath up` starts: the difference is the cost of replication
(here without a network between the nodes, and with all three on the same two cores).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

SBIN = Path("/usr/sbin")

sys.path.insert(0, str(Path(__file__).parent))
from empath.core import up  # noqa: E402
from ingress import MESSAGES, SESSIONS, SIZE, counts, free_port, smtp_source, start_up  # noqa: E402

CLUSTER = os.environ.get("BENCH_NATS_CLUSTER", "") not in {"", "0"}


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


@contextmanager
def nats_cluster(tmp: Path, size: int = 3) -> Iterator[str]:
    """`size` nats-server processes with routes and JetStream on loopback (anonymous clients,
    NATS's default syncing); their URLs as EMPATH_NATS_URL lists them."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    routes = ", ".join(f'"nats-route://127.0.0.1:{c}"' for _, c in ports)
    processes = []
    try:
        for number, (port, cluster_port) in enumerate(ports, start=1):
            directory = tmp / f"nats-{number}"
            directory.mkdir()
            config = directory / "nats.conf"
            config.write_text(
                f"server_name: n{number}\njetstream {{}}\ncluster {{\n  name: bench\n"
                f"  listen: 127.0.0.1:{cluster_port}\n  routes: [{routes}]\n}}\n"
            )
            argv = up.nats_argv(
                host="127.0.0.1", port=port, store_dir=directory / "js", config=config
            )
            log = (directory / "nats.log").open("wb")
            processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        urls = [f"nats://127.0.0.1:{port}" for port, _ in ports]
        wait_until(lambda: asyncio.run(jetstream_ready(urls)), "the NATS cluster", timeout=60)
        yield ",".join(urls)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


async def quiet(error: Exception) -> None:
    """nats.py prints every refused connection; a server not up yet is no news here."""


async def jetstream_ready(urls: list[str]) -> bool:
    try:
        nc = await nats.connect(
            servers=urls, connect_timeout=1, allow_reconnect=False, error_cb=quiet
        )
    except (nats.errors.Error, OSError):  # not up yet
        return False
    try:
        await nc.jetstream(timeout=2).account_info()
        return True
    except (nats.errors.Error, nats.js.errors.Error, OSError):
        return False
    finally:
        await nc.close()


async def delivered_on(url: str) -> int:
    nc = await nats.connect(servers=url.split(","))
    try:
        reply = await nc.request("empath.api.queue.counts", b"{}", timeout=60)
        return int(json.loads(reply.data)["counts"]["delivered"])
    finally:
        await nc.close()


def run_empath(tmp: Path, sink_port: int, nats_url: str | None = None) -> float:
    """Empath relaying MESSAGES to the sink: on the NATS `empath up` starts, or on `nats_url`
    (a cluster) with three replicas."""
    ports = {name: free_port() for name in ("smtp", "nats", "s3")}
    data = tmp / ("empath-cluster" if nats_url else "empath")
    external = {"nats_url": nats_url, "nats_replicas": "3"} if nats_url else {}
    process = start_up(
        data,
        ports,
        hostname="bench-empath.test",
        mx_overrides=f"sink.test=127.0.0.1:{sink_port}",
        delivery_rate_per_domain="0",
        delivery_max_connections_per_domain="20",
        **external,
    )

    def delivered() -> int:
        if nats_url:
            return asyncio.run(delivered_on(nats_url))
        return counts(data, ports["nats"])["delivered"]

    try:
        started = time.perf_counter()
        smtp_source(ports["smtp"], "user@sink.test")
        wait_until(lambda: delivered() >= MESSAGES, "Empath")
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
    with tempfile.TemporaryDirectory(prefix="empath-relay-", dir="/tmp") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        sink_port = free_port()
        sink = start_sink(sink_port)
        try:
            empath = run_empath(tmp, sink_port)
            replicated = None
            if CLUSTER:
                with nats_cluster(tmp) as url:
                    replicated = run_empath(tmp, sink_port, url)
            postfix = run_postfix(tmp, sink_port)
        finally:
            sink.terminate()
            sink.wait()
    print()
    print(
        f"relay benchmark ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})"
    )
    print(
        f"smtp-source: {MESSAGES} messages of {SIZE} bytes over {SESSIONS} sessions -> MTA "
        f"-> smtp-sink"
    )
    print(f"empath   {MESSAGES / empath:8.1f} messages/s   ({empath:.1f} s until all delivered)")
    if replicated is not None:
        print(
            f"empath, 3-node NATS, 3 replicas {MESSAGES / replicated:8.1f} messages/s   "
            f"({replicated:.1f} s; {replicated / empath:.2f}x the time on one node)"
        )
    print(f"postfix  {MESSAGES / postfix:8.1f} messages/s   ({postfix:.1f} s until all delivered)")
    print(f"ratio    {postfix / empath:8.2f}  (empath rate / postfix rate)")


if __name__ == "__main__":
    main()
