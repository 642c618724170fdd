"""A body in hand is put on the event loop (`core/s3put.py`, answers read by httptools), not
through the SDK's threads: the real SeaweedFS gets it whole over a kept-alive connection, a
connection the store closed meanwhile costs nothing, a refusal is reported with S3's code
and not retried, and a store that never answers costs a bounded time. Answers SeaweedFS does
not send (chunked, closing, a 503 then a 200, endless or not HTTP) come from a scripted
server: each is read as HTTP/1.1 frames it, and nothing it sends is read past its limit."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from empath.core import errors, store

BODY = b"Received: by mx.test\r\nSubject: hello\r\n\r\n" + b"x" * 4000 + b"\r\n"


class Recorder:
    """In front of the real S3 endpoint: counts the connections and the PUT requests that
    pass, and can reset every open connection (a store's idle timeout, a restart)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.puts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def reset_open(self) -> None:
        for writer in self._open:
            writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_open()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open |= {writer, up_writer}

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, up: bool
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    if up:
                        self.puts += data.count(b"PUT /")
                    sink.write(data)
                    await sink.drain()
            sink.close()

        pumps = {
            asyncio.create_task(pump(reader, up_writer, up=True)),
            asyncio.create_task(pump(up_reader, writer, up=False)),
        }
        self._pumps |= pumps
        await asyncio.gather(*pumps)


@pytest.fixture
async def recorder(s3_endpoint: str) -> AsyncIterator[Recorder]:
    proxy = Recorder(urlsplit(s3_endpoint).port or 8333)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def stores(
    make_settings: Callable[..., Any], recorder: Recorder
) -> AsyncIterator[tuple[store.ObjectStore, store.ObjectStore]]:
    """The bucket straight, to look; and through the recorder (a region given: the client
    asks nothing before its first PUT)."""
    direct = store.ObjectStore(make_settings())
    through = store.ObjectStore(
        make_settings(s3_endpoint=f"http://127.0.0.1:{recorder.port}", s3_region="us-east-1")
    )
    try:
        await direct.ensure_bucket()
        yield direct, through
    finally:
        through.close()
        direct.close()


async def test_small_bodies_are_put_whole_over_one_kept_alive_connection(
    stores: tuple[store.ObjectStore, store.ObjectStore], recorder: Recorder
) -> None:
    direct, objects = stores
    for n in range(3):
        await objects.put(f"messages/2026/12/07/m{n}.eml", BODY + bytes([n]))
    assert (recorder.connections, recorder.puts) == (1, 3)
    for n in range(3):
        assert await direct.get(f"messages/2026/12/07/m{n}.eml") == BODY + bytes([n])


async def test_a_connection_the_store_closed_while_idle_is_replaced_without_an_error(
    stores: tuple[store.ObjectStore, store.ObjectStore], recorder: Recorder
) -> None:
    direct, objects = stores
    await objects.put("messages/first.eml", BODY)
    recorder.reset_open()
    await asyncio.sleep(0)  # the reset reaches the client's side of the connection
    await objects.put("messages/second.eml", BODY)
    assert recorder.connections == 2
    assert await direct.get("messages/second.eml") == BODY


async def test_a_put_the_store_refuses_names_its_s3_error_and_is_not_retried(
    make_settings: Callable[..., Any], recorder: Recorder
) -> None:
    direct = store.ObjectStore(make_settings())
    impostor = store.ObjectStore(
        make_settings(
            s3_endpoint=f"http://127.0.0.1:{recorder.port}",
            s3_region="us-east-1",
            s3_secret_key="not-the-secret-key",
        )
    )
    try:
        await direct.ensure_bucket()
        with pytest.raises(errors.StoreUnavailable, match=r"put messages/forged\.eml: \w+"):
            await impostor.put("messages/forged.eml", BODY)
        assert recorder.puts == 1
        assert await direct.keys("") == []
    finally:
        impostor.close()
        direct.close()


async def test_a_store_that_never_answers_fails_the_put_after_its_tries(
    make_settings: Callable[..., Any],
) -> None:
    """Each try waits `EMPATH_S3_TIMEOUT`; a lost answer is tried twice more (the SDK's
    rule), then the caller hears of it."""
    tries = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal tries
        tries += 1
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    objects = store.ObjectStore(
        make_settings(s3_endpoint=f"http://127.0.0.1:{port}", s3_region="us-east-1", s3_timeout=0.3)
    )
    started = time.monotonic()
    try:
        with pytest.raises(errors.StoreUnavailable, match="TimeoutError"):
            await objects.put("messages/lost.eml", BODY)
        assert tries == 3
        assert time.monotonic() - started < 5
    finally:
        objects.close()
        server.close()
        await server.wait_closed()


class Scripted:
    """A server that answers each request it reads (head and `Content-Length` body) with the
    next of `answers`, closing after one that says so (or is HTTP/1.0's); it counts
    connections and requests. `objects` is a store that PUTs to it (closed on leaving)."""

    def __init__(self, make_settings: Callable[..., Any], answers: list[bytes]) -> None:
        self.make_settings = make_settings
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.objects: store.ObjectStore  # made once the server has its port

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.objects = through(self.make_settings, port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self.objects.close()
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests.append(head + body)
                answer = self.answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                    break
        writer.close()


def through(make_settings: Callable[..., Any], port: int, **overrides: Any) -> store.ObjectStore:
    return store.ObjectStore(
        make_settings(s3_endpoint=f"http://127.0.0.1:{port}", s3_region="us-east-1", **overrides)
    )


REFUSAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied.</Message></Error>"
)
OK = b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "e"\r\n\r\n'


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [body[n : n + size] for n in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nX-T: 1\r\n\r\n"


async def test_a_chunked_refusal_names_its_s3_error_and_a_closing_store_costs_a_connection(
    make_settings: Callable[..., Any],
) -> None:
    answers = [
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(REFUSAL),
        b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (len(REFUSAL), REFUSAL),
        b"HTTP/1.0 403 Forbidden\r\n\r\n" + REFUSAL,  # ends with the connection
        OK,
    ]
    async with Scripted(make_settings, answers) as server:
        for _ in range(3):
            with pytest.raises(errors.StoreUnavailable, match="AccessDenied: Access Denied"):
                await server.objects.put("messages/refused.eml", BODY)
        await server.objects.put("messages/taken.eml", BODY)
    # The chunked answer kept its connection; the two that close cost one each.
    assert (server.connections, len(server.requests)) == (3, 4)
    head, _, body = server.requests[-1].partition(b"\r\n\r\n")
    assert head.startswith(b"PUT /")
    assert b"\r\nAuthorization: AWS4-HMAC-SHA256 " in head
    assert body == BODY


async def test_a_store_shedding_load_is_asked_again_on_the_same_connection(
    make_settings: Callable[..., Any],
) -> None:
    slow_down = b"<Error><Code>SlowDown</Code><Message>Reduce your rate.</Message></Error>"
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(slow_down), slow_down),
        OK,
    ]
    async with Scripted(make_settings, answers) as server:
        await server.objects.put("messages/later.eml", BODY)
    assert (server.connections, len(server.requests)) == (1, 2)
    assert all(request.endswith(BODY) for request in server.requests)


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 70000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"ffff\r\n" + b"x" * 70000,
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"x" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    ],
    ids=["not-http", "endless-body", "endless-chunk", "endless-head", "bad-length"],
)
async def test_an_answer_that_cannot_be_read_fails_the_put_after_its_tries(
    make_settings: Callable[..., Any], answer: bytes
) -> None:
    async with Scripted(make_settings, [answer] * 3) as server:
        with pytest.raises(errors.StoreUnavailable, match=r"LimitOverrun|UnreadableAnswer"):
            await server.objects.put("messages/odd.eml", BODY)
    assert len(server.requests) == 3


async def test_what_follows_the_final_answer_is_not_read_and_its_connection_not_kept(
    make_settings: Callable[..., Any],
) -> None:
    # A refusal with a 200 behind it in the same write: the refusal stands (nothing is taken
    # as stored that the store refused), and a connection that said more is not asked again.
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(REFUSAL), REFUSAL)
    async with Scripted(make_settings, [refusal + OK, OK]) as server:
        with pytest.raises(errors.StoreUnavailable, match="AccessDenied"):
            await server.objects.put("messages/refused.eml", BODY)
        await server.objects.put("messages/taken.eml", BODY)
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_an_answer_cut_short_by_the_close_is_asked_again(
    make_settings: Callable[..., Any],
) -> None:
    # Its length says 100 bytes, 3 came: not an answer to go by, even a 200.
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nabc"
    async with Scripted(make_settings, [cut, OK]) as server:
        await server.objects.put("messages/again.eml", BODY)
    assert (server.connections, len(server.requests)) == (2, 2)
