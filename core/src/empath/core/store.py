"""The object store holding message bodies (any S3-compatible service, via the minio SDK).

minio is a blocking client: every call runs in a bounded thread pool so the event loop never
waits on the network; but a body in hand, the PUT of every message, goes out on the event loop
itself (see `s3put`). Bodies live under `messages/<yyyy>/<mm>/<dd>/<id>.eml`: the date spreads
keys for audits and repair; nothing needs a listing to find work.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import BinaryIO, Protocol, TypeVar, cast

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from empath.core import errors, metrics, s3put, telemetry
from empath.core.settings import Settings

log = logging.getLogger("empath.core.store")
_tracer = telemetry.tracer("empath.core.store")

T = TypeVar("T")

BODY_PREFIX = "messages/"

# The most of a body read when only its header section is wanted (a DSN that returns headers,
# control's message view): headers longer than this are cut at their last whole line.
HEAD_LIMIT = 256 * 1024

# Bodies above this size are uploaded in parts of it (S3's smallest part but the last).
PART_SIZE = 5 * 1024 * 1024


class Readable(Protocol):
    """What an upload reads from: `read(n)` gives at most n bytes, b"" at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


def body_key(message_id: str, received_at: datetime) -> str:
    return f"{day_prefix(received_at)}{message_id}.eml"


def day_prefix(day: date) -> str:
    """Where the bodies of the messages received on `day` are (for audits)."""
    return f"{BODY_PREFIX}{day:%Y/%m/%d}/"


def retries() -> urllib3.Retry:
    """How the S3 client retries a request itself before the caller hears of a failure.

    A store that restarts, fails over or sheds load (S3's 503 SlowDown, 429) answers again
    within a second or two: a body written then would otherwise cost the SMTP client a 451 and
    a whole resend. Connection errors and those statuses are retried with a short back-off
    (0.2, 0.4, 0.8 s), within `EMPATH_S3_TIMEOUT` per try; urllib3 retries only idempotent
    methods after a request was sent, and a body's PUT is one (same key, same bytes)."""
    return urllib3.Retry(
        total=4,
        connect=3,
        read=2,
        status=3,
        backoff_factor=0.2,
        backoff_max=2.0,
        status_forcelist=[429, 500, 502, 503, 504],
        # A Retry-After of minutes would hold an SMTP client that long: the back-off rules.
        respect_retry_after_header=False,
    )


# Markers of bodies ingress removed after answering 451 (the message is void): an empty
# object under this prefix, named after the body (see `spool.outcomes.void`).
VOID_PREFIX = "void/"


def void_key(body_key: str) -> str:
    return f"{VOID_PREFIX}{body_key}"


class ObjectStore:
    """Message bodies in one bucket."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=min(5.0, settings.s3_timeout), read=settings.s3_timeout
            ),
            maxsize=settings.s3_threads,
            retries=retries(),
            # An https endpoint's certificate is always verified: with the given CA bundle
            # (EMPATH_S3_TLS_CA, a private CA), else with the system's.
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(settings.s3_tls_ca) if settings.s3_tls_ca is not None else None,
        )
        self._client = Minio(
            settings.s3_host,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )
        self._pool = ThreadPoolExecutor(settings.s3_threads, thread_name_prefix="empath-s3")
        self._putter = s3put.Putter(settings, retry=retries())
        self._region = self._putter.region

    def close(self) -> None:
        self._putter.close()
        self._pool.shutdown(wait=True)

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        operation = {"operation": what.split(" ", 1)[0]}
        started = time.monotonic()
        try:
            with telemetry.span(_tracer, f"store.{operation['operation']}"):
                return await loop.run_in_executor(self._pool, call)
        except S3Error as error:
            if error.code in {"NoSuchKey", "NoSuchObject"}:
                raise errors.NotFound(f"{what}: no such object") from error
            metrics.store_errors.add(1, {**operation, "error": error.code})
            raise errors.StoreUnavailable(f"{what}: {error.code}: {error.message}") from error
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            metrics.store_errors.add(1, {**operation, "error": error.__class__.__name__})
            raise errors.StoreUnavailable(f"{what}: {error!r}") from error
        finally:
            metrics.store_duration.record(time.monotonic() - started, operation)

    async def ensure_bucket(self) -> None:
        def ensure() -> None:
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as error:  # another replica made it first
                    if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

        await self._run(f"bucket {self.bucket}", ensure)

    async def put(self, key: str, data: bytes) -> None:
        """Upload bytes in hand: up to `PART_SIZE` in one request on the event loop, without
        the SDK's thread (see `s3put`); larger ones as `put_stream` does."""
        if len(data) > PART_SIZE:
            await self.put_stream(key, io.BytesIO(data), len(data))
            return
        if self._region is None:
            # Asked once, as the SDK does before its first request to a bucket.
            self._region = await self._run(
                f"region {self.bucket}",
                lambda: self._client._get_region(self.bucket),
            )
        operation = {"operation": "put"}
        started = time.monotonic()
        try:
            with telemetry.span(_tracer, "store.put"):
                await self._putter.put(
                    bucket=self.bucket,
                    key=key,
                    data=data,
                    region=self._region,
                    content_type="message/rfc822",
                )
        except s3put.Failed as error:
            metrics.store_errors.add(1, {**operation, "error": error.code})
            raise errors.StoreUnavailable(f"put {key}: {error}") from error
        finally:
            metrics.store_duration.record(time.monotonic() - started, operation)

    async def put_stream(self, key: str, data: Readable, length: int) -> None:
        """Upload `length` bytes read from `data` (in the store's threads): one request up to
        `PART_SIZE`, a multipart upload above, one part at a time, so an upload holds about one
        part in memory whatever its size. The object appears whole or not at all (a failed
        multipart upload is aborted)."""
        await self._run(
            f"put {key}",
            lambda: self._client.put_object(
                self.bucket,
                key,
                cast(BinaryIO, data),
                length,
                content_type="message/rfc822",
                part_size=PART_SIZE,
                num_parallel_uploads=1,
            ),
        )

    async def get(self, key: str, *, limit: int | None = None) -> bytes:
        """An object's bytes; with `limit`, its first `limit` bytes only (one ranged GET)."""

        def get() -> bytes:
            response = self._client.get_object(self.bucket, key, offset=0, length=limit or 0)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return await self._run(f"get {key}", get)

    async def exists(self, key: str) -> bool:
        try:
            await self._run(f"stat {key}", lambda: self._client.stat_object(self.bucket, key))
        except errors.NotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._run(f"delete {key}", lambda: self._client.remove_object(self.bucket, key))

    async def delete_many(self, keys: list[str]) -> list[str]:
        """Delete up to 1,000 objects in one request (S3's DeleteObjects); the keys that could
        not be deleted (a missing key counts as deleted)."""

        def delete() -> list[str]:
            failures = self._client.remove_objects(self.bucket, [DeleteObject(k) for k in keys])
            return [str(f.name) for f in failures if f.code not in {"NoSuchKey", "NoSuchObject"}]

        return await self._run(f"delete {len(keys)} objects", delete)

    async def keys(self, prefix: str = BODY_PREFIX) -> list[str]:
        """Every key under a prefix: for audits, repair and tests, never to find work."""
        return await self._run(
            f"list {prefix}",
            lambda: [
                str(o.object_name)
                for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ],
        )
