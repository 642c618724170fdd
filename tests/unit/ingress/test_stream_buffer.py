"""DATA takes the whole lines asyncio has already read as one block (`Session._read_data`),
from the StreamReader's own buffer. It is not public: should a Python release drop or change
it, DATA still works line by line, only slower; this says so when it happens."""

from __future__ import annotations

import asyncio


def test_asyncio_keeps_what_it_read_in_a_bytearray_data_can_take_lines_from() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"Subject: a\r\n\r\nbody\r\n.\r\n")
    buffered = getattr(reader, "_buffer", None)
    assert isinstance(buffered, bytearray)
    assert bytes(buffered) == b"Subject: a\r\n\r\nbody\r\n.\r\n"
