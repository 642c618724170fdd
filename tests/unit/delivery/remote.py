"""A remote MX played by the test, on in-memory streams.

The client reads from a real `asyncio.StreamReader` (so its line limit holds) and writes into a
list, one item per write. The test takes turns with the client: `turn()` waits until the client
stops to wait for a reply that is not there, and returns what it wrote since the last turn;
`reply()` answers. A client that sent a command before it had the reply it should wait for is
caught at its next turn, because its writes arrive together.
"""

from __future__ import annotations

import asyncio
from typing import Any

from empath.core import events
from empath.core import settings as config
from empath.delivery import client, pool, resolver, throttle, worker

HOP = resolver.Hop(name="mx1.example.com", address="192.0.2.25", port=25)
TURN_TIMEOUT = 5.0

PIPELINING_EHLO = (
    "250-mx1.example.com hello",
    "250-PIPELINING",
    "250-SIZE 10240000",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250 DSN",
)
PLAIN_EHLO = ("250-mx1.example.com hello", "250-SIZE 10240000", "250 8BITMIME")


class Remote:
    """Both ends of the client's streams: what it reads and what it wrote."""

    def __init__(self) -> None:
        self.stream = asyncio.StreamReader()
        self.writes: list[bytes] = []
        self.closed = False
        self.waiting = asyncio.Event()
        self._lines = 0  # complete lines fed and not yet read
        self._eof = False
        self._seen = 0

    # The remote's side.

    def reply(self, *lines: str | bytes) -> None:
        """Answer with these lines (CRLF added to text lines)."""
        data = b"".join(
            line if isinstance(line, bytes) else line.encode() + b"\r\n" for line in lines
        )
        self.waiting.clear()
        self._lines += data.count(b"\n")
        self.stream.feed_data(data)

    def hang_up(self) -> None:
        self.waiting.clear()
        self._eof = True
        self.stream.feed_eof()

    async def turn(self) -> list[bytes]:
        """The writes the client made before it stopped to wait for a reply."""
        await asyncio.wait_for(self.waiting.wait(), TURN_TIMEOUT)
        writes, self._seen = self.writes[self._seen :], len(self.writes)
        return writes

    def unseen(self) -> list[bytes]:
        """Writes since the last turn (for when the client is done, not waiting)."""
        writes, self._seen = self.writes[self._seen :], len(self.writes)
        return writes

    # The client's side: what `client.Connection` uses of a reader and a writer.

    async def readline(self) -> bytes:
        if self._lines == 0 and not self._eof:
            self.waiting.set()
        try:
            line = await self.stream.readline()
        finally:
            self.waiting.clear()
        self._lines -= line.count(b"\n")
        return line

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    @property
    def transport(self) -> Remote:
        return self

    def get_write_buffer_size(self) -> int:
        return 0  # every write taken at once

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("closed")

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def connection(
    remote: Remote, *, timeout: float = TURN_TIMEOUT, **fields: Any
) -> client.Connection:
    """A session with the remote, as `client.connect` leaves it after the greeting and EHLO."""
    return client.Connection(
        reader=remote,  # type: ignore[arg-type]
        writer=remote,  # type: ignore[arg-type]
        hop=HOP,
        timeout=timeout,
        tls_note="none (STARTTLS not offered)",
        **fields,
    )


async def greeted(remote: Remote, ehlo: tuple[str, ...], **fields: Any) -> client.Connection:
    """A session that has said EHLO and read the remote's extensions."""
    session = connection(remote, **fields)
    said = asyncio.create_task(session.ehlo("mx.test"))
    assert await remote.turn() == [b"EHLO mx.test\r\n"]
    remote.reply(*ehlo)
    await said
    return session


def job(*recipients: str | events.Recipient, **fields: Any) -> events.DeliveryJob:
    """A job for these recipients; `fields` are the job's own fields or its envelope's."""
    envelope: dict[str, Any] = {
        "sender": "alice@example.org",
        "recipients": tuple(
            r if isinstance(r, events.Recipient) else events.Recipient(address=r)
            for r in recipients or ("bob@example.com",)
        ),
    }
    envelope.update({k: v for k, v in fields.items() if k in events.Envelope.model_fields})
    values: dict[str, Any] = {
        "id": "01KJP5Z4M0ABCDEFGHJKMNPQRS",
        "attempt": 1,
        "body_key": "bodies/x",
        "size": 10,
        "envelope": events.Envelope(**envelope),
    }
    values.update({k: v for k, v in fields.items() if k not in events.Envelope.model_fields})
    return events.DeliveryJob(**values)


class Routes:
    """Routing that always answers the one test MX."""

    async def route(self, domain: str) -> list[resolver.Hop]:
        return [HOP]


def a_worker(**settings: Any) -> worker.Worker:
    """A delivery worker that routes to the test MX and needs no bus, bucket or flags."""
    return worker.Worker(
        settings=config.load(environment=False, hostname="mx.test", **settings),
        bus=None,  # type: ignore[arg-type]
        objects=None,  # type: ignore[arg-type]
        routes=Routes(),  # type: ignore[arg-type]
        connections=pool.Pool(messages_per_connection=10, idle_timeout=30),
        limits=throttle.Throttle(connections=1, rate=0),
        flags=None,  # type: ignore[arg-type]
        queue=None,  # type: ignore[arg-type]
    )
