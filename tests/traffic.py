"""Mail traffic for the chaos suite: clients that behave like real MTAs, and a tally of what
arrived at the far end.

Each message carries a unique id in an `X-Chaos-Id` header. A client sends its messages one
after another on a kept session and, as an MTA does, tries a message again later when the
answer is 4xx or the connection breaks (the server was killed, or restarts); a 5xx is final.
The tally reads every message a remote `Remote` received and counts each id, so a test can
say what was lost and what arrived twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field

from tests.remote import Remote
from tests.wire import Wire

SENDER = "a@sender.test"
RECIPIENT = "u@dest.test"
# How long a client waits before trying a message again: a real MTA waits minutes; the faults
# here last seconds.
RETRY_PAUSE = 0.2
HEADER = b"x-chaos-id:"


def body(chaos_id: str) -> bytes:
    return (
        f"Message-ID: <{chaos_id}@chaos.test>\r\n"
        f"X-Chaos-Id: {chaos_id}\r\n"
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: chaos {chaos_id}\r\n\r\n"
        f"Message {chaos_id}, one of many.\r\n"
    ).encode()


def chaos_id_of(data: bytes) -> str | None:
    """The id in a message's own header block (a bounce quotes one only in its body)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(HEADER):
            return line[len(HEADER) :].strip().decode()
    return None


@dataclass
class Clients:
    """Clients sending messages to an SMTP port, retrying as MTAs do; what they were told."""

    port: int
    accepted: dict[str, list[str]] = field(default_factory=dict)  # id -> queue ids of its 250s
    refused: dict[str, str] = field(default_factory=dict)  # id -> the 5xx it got
    retries: int = 0
    awaiting_reply: int = 0  # transactions whose body is sent and whose reply has not come

    async def send(
        self, chaos_ids: list[str], *, clients: int = 8, rate: float | None = None
    ) -> None:
        """Send every message, each until it is answered 250 or 5xx; at most `rate` new
        messages a second (a steady load, so that faults meet mail in every stage)."""
        todo: asyncio.Queue[str] = asyncio.Queue()
        for chaos_id in chaos_ids:
            todo.put_nowait(chaos_id)
        pace = Pace(rate)
        await asyncio.gather(*(self._client(todo, pace) for _ in range(clients)))

    async def _client(self, todo: asyncio.Queue[str], pace: Pace) -> None:
        wire: Wire | None = None
        try:
            while not todo.empty():
                chaos_id = todo.get_nowait()
                await pace.turn()
                while True:
                    try:
                        if wire is None:
                            wire = await Wire.open(self.port)
                            if not wire.greeting.startswith("220"):
                                raise ConnectionError(wire.greeting)
                            if not (await wire.command("EHLO client.test")).startswith("250"):
                                raise ConnectionError("EHLO refused")
                        reply = await self._transaction(wire, chaos_id)
                    except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                        reply = "connection lost"
                    if reply.startswith("250"):
                        self.accepted.setdefault(chaos_id, []).append(reply.rsplit(" ", 1)[1])
                        break
                    if reply.startswith("5"):
                        self.refused[chaos_id] = reply
                        break
                    # 4xx or a lost connection: a new session, a moment later.
                    self.retries += 1
                    if wire is not None:
                        await wire.close()
                        wire = None
                    await asyncio.sleep(RETRY_PAUSE)
        finally:
            if wire is not None:
                with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                    await wire.command("QUIT")
                await wire.close()

    async def _transaction(self, wire: Wire, chaos_id: str) -> str:
        for command in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>", "DATA"):
            reply = await wire.command(command)
            if not reply.startswith(("250", "354")):
                with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                    await wire.command("RSET")
                return reply
        self.awaiting_reply += 1
        try:
            await wire.send(body(chaos_id) + b".\r\n")
            return await wire.reply(timeout=30)
        finally:
            self.awaiting_reply -= 1


class Pace:
    """Turns at a steady rate shared by every client (none: no waiting)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1 / rate if rate else 0.0
        self.next: float | None = None

    async def turn(self) -> None:
        if not self.interval:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.next = now if self.next is None else max(now, self.next + self.interval)
        await asyncio.sleep(self.next - now)


@dataclass(frozen=True, slots=True)
class Tally:
    """What arrived at the sink, by chaos id."""

    counts: collections.Counter[str]
    others: int  # messages without a chaos id of their own: bounces

    @classmethod
    def of(cls, sink: Remote) -> Tally:
        counts: collections.Counter[str] = collections.Counter()
        others = 0
        for arrived in list(sink.arrived):
            chaos_id = chaos_id_of(arrived.data)
            if chaos_id is None:
                others += 1
            else:
                counts[chaos_id] += 1
        return cls(counts, others)

    def missing(self, expected: set[str]) -> set[str]:
        return expected - set(self.counts)

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of each id."""
        return sum(n - 1 for n in self.counts.values())
