"""The content of a message as DATA brings it in, kept out of memory.

A message of a few kilobytes stays in memory; past `MEMORY_LIMIT` it goes on to an unnamed
temporary file (`TMPDIR`; an `emptyDir` on Kubernetes), which vanishes with its last open
descriptor, even when the process is killed. The store then reads it back in parts as it
uploads it, so a 25 MB message costs ingress about one upload part of memory (5 MiB) instead
of several copies of the whole message.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO

# What a message may take in memory before it goes to a temporary file: most mail is smaller.
MEMORY_LIMIT = 256 * 1024
# Once in a file, the content is written in blocks of this size.
BLOCK = 64 * 1024


class Content:
    """The bytes of one message (without the headers ingress adds), written line by line."""

    def __init__(self, *, memory_limit: int = MEMORY_LIMIT) -> None:
        self.size = 0
        self._pending = bytearray()
        self._memory_limit = memory_limit
        self._spill_at = memory_limit
        self._file: BinaryIO | None = None

    def append(self, data: bytes) -> None:
        """Add data at the end; OSError when the temporary file cannot take it (disk full)."""
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= self._spill_at:
            self._flush()

    def clear(self) -> None:
        """Forget everything written (a message refused for its size or a line)."""
        self.close()
        self.size = 0

    def head(self, limit: int) -> bytes:
        """The first `limit` bytes (what plugins are shown)."""
        if self._file is None:
            return bytes(self._pending[:limit])
        self._flush()
        return os.pread(self._file.fileno(), limit, 0)

    def reader(self, prefix: bytes) -> Reader:
        """A stream of `prefix` then the content, of its own: it may be read (in another
        thread) after this content is closed, and must be closed itself."""
        if self._file is None:
            return Reader(prefix + self._pending, None, size=len(prefix) + self.size)
        self._flush()
        return Reader(prefix, os.dup(self._file.fileno()), size=len(prefix) + self.size)

    def close(self) -> None:
        """Let go of the content; never fails (the file is closed even when a write it still
        had buffered fails again)."""
        self._pending.clear()
        self._spill_at = self._memory_limit
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _flush(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="empath-data-")  # noqa: SIM115 (closed in close)
            self._spill_at = BLOCK
        self._file.write(self._pending)
        self._file.flush()
        self._pending.clear()


class Reader:
    """`prefix`, then a file read from its start through its own descriptor: what the store
    uploads. `read` is all the S3 client needs of a stream."""

    def __init__(self, prefix: bytes, fd: int | None, *, size: int) -> None:
        self.size = size
        self._prefix = prefix
        self._fd = fd
        self._offset = 0  # in the file

    def held(self) -> bytes | None:
        """The whole of it when it never left memory (before any read): the store then puts
        the bytes in hand, without streaming them."""
        return self._prefix if self._fd is None and len(self._prefix) == self.size else None

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.size
        if self._prefix:
            taken, self._prefix = self._prefix[:size], self._prefix[size:]
            return taken
        if self._fd is None:
            return b""
        data = os.pread(self._fd, size, self._offset)
        self._offset += len(data)
        return data

    def close(self) -> None:
        self._prefix = b""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
