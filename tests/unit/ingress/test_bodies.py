"""A message's content as ingress keeps it: in memory while small, in a temporary file past
that, and read back whole behind the headers ingress adds."""

from __future__ import annotations

import pytest

from empath.ingress import bodies

LINES = [f"line {i:06d} {'x' * 60}\r\n".encode() for i in range(3000)]  # about 220 KB
WHOLE = b"".join(LINES)


def written(memory_limit: int) -> bodies.Content:
    content = bodies.Content(memory_limit=memory_limit)
    for line in LINES:
        content.append(line)
    return content


def read_all(reader: bodies.Reader, part: int) -> bytes:
    """As the S3 client reads: parts of at most `part` bytes until b""."""
    parts = []
    while chunk := reader.read(part):
        assert len(chunk) <= part
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("memory_limit", [1 << 20, 4096], ids=["in memory", "in a file"])
def test_the_content_reads_back_whole_behind_the_prefix_after_it_is_closed(
    memory_limit: int,
) -> None:
    content = written(memory_limit)
    reader = content.reader(b"Received: x\r\n")
    content.close()
    with reader:
        assert reader.size == len(WHOLE) + 13
        assert read_all(reader, 5000) == b"Received: x\r\n" + WHOLE


@pytest.mark.parametrize("memory_limit", [1 << 20, 4096], ids=["in memory", "in a file"])
def test_the_head_is_the_first_bytes_and_the_size_counts_them_all(memory_limit: int) -> None:
    content = written(memory_limit)
    try:
        assert content.size == len(WHOLE)
        assert content.head(100_000) == WHOLE[:100_000]
        assert content.head(10**9) == WHOLE
    finally:
        content.close()


def test_cleared_content_is_empty() -> None:
    content = written(4096)
    content.clear()
    with content.reader(b"") as reader:
        assert (content.size, reader.read(1000), content.head(10)) == (0, b"", b"")
    content.close()
