"""A body in hand is put on the event loop (`core/s3put.py`, aiohttp's client), not through
the SDK's threads: the real SeaweedFS gets it whole over a kept-alive connection, a
connection the store closed meanwhile costs nothing, a refusal is reported with S3's code
and not retried, and a store that never answers costs a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
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
