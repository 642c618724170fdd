"""Control API benchmark: `queue list` (first page) and `queue stats` with 100,000 messages.

`empath up` runs with the queue frozen (nothing is delivered); the queue state is filled with
records written straight into its KV bucket (going through SMTP would take many minutes and
measure ingress, not control). The spool's live view picks them up like any other change.
Each call is timed over HTTP, as `empathctl` makes it.

    make bench-control
    BENCH_MESSAGES=20000 make bench-control
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from empath.core import events, ids, names, queue, store

sys.path.insert(0, str(Path(__file__).parent))
from ingress import connect, free_port, start_up

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "100000"))
TOKEN = "bench-token"
STATES = [queue.State.DEFERRED] * 6 + [queue.State.QUEUED] * 3 + [queue.State.FAILED]


def record(n: int, now: datetime, state: queue.State | None = None) -> queue.Entry:
    received = now - timedelta(seconds=n * 7 % 90000)
    message_id = ids.new_id(int(received.timestamp() * 1e9))
    domain = f"d{n % 500}.example"
    return queue.Entry(
        id=message_id,
        state=state or STATES[n % len(STATES)],
        sender=f"s{n % 1000}@sender.example",
        recipients=(queue.RecipientState(address=f"u{n}@{domain}"),),
        size=2048,
        body_key=store.body_key(message_id, received),
        received_at=received,
        attempts=n % 5,
        next_attempt=now + timedelta(hours=1),
        last_reply="451 4.3.0 try later",
        client=events.Client(ip="192.0.2.1"),
    )


async def fill(
    data: Path, nats_port: int, count: int = MESSAGES, *, state: queue.State | None = None
) -> float:
    """Write `count` records into the queue state (in `state`, or a mix of states)."""
    nc = await connect(data, nats_port)
    js = nc.jetstream()
    kv = await js.key_value(names.QUEUE_BUCKET)
    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(0, count, 1000):
        batch = [record(n, now, state) for n in range(start, min(start + 1000, count))]
        await asyncio.gather(
            *(kv.put(names.queue_key(e.id), e.model_dump_json().encode()) for e in batch)
        )
    await nc.close()
    return time.perf_counter() - started


def timed(client: httpx.Client, path: str, **params: str) -> float:
    started = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def main() -> None:
    ports = {name: free_port() for name in ("smtp", "nats", "s3", "control")}
    with tempfile.TemporaryDirectory(prefix="empath-control-") as tmp:
        data = Path(tmp) / "data"
        process = start_up(
            data,
            ports,
            control_token=TOKEN,
            control_listen=f"127.0.0.1:{ports['control']}",
        )
        try:
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{ports['control']}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            )
            client.post("/api/v1/queue/freeze").raise_for_status()
            filled = asyncio.run(fill(data, ports["nats"]))
            deadline = time.monotonic() + 300
            while client.get("/api/v1/queue/stats").json()["total"] < MESSAGES:
                if time.monotonic() > deadline:
                    raise SystemExit("the spool never saw every record")
                time.sleep(0.5)
            lists = [timed(client, "/api/v1/queue") for _ in range(10)]
            deferred = [
                timed(client, "/api/v1/queue", state="deferred", domain="d7.example")
                for _ in range(10)
            ]
            stats = [timed(client, "/api/v1/queue/stats") for _ in range(10)]
            client.close()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    def line(name: str, timings: list[float]) -> str:
        return (
            f"{name:34} median {statistics.median(timings) * 1000:7.1f} ms   "
            f"max {max(timings) * 1000:7.1f} ms"
        )

    print()
    print(
        f"control API benchmark ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})"
    )
    print(f"{MESSAGES} messages in the queue state (written in {filled:.1f} s)")
    print(line("queue list (first page of 100)", lists))
    print(line("queue list --state --domain", deferred))
    print(line("queue stats", stats))


if __name__ == "__main__":
    main()
