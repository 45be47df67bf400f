"""The last bytes of a program's output that goes to no log file of its own (`*_logfile = "-"`:
through the master's own stream), kept in memory so that `tail`, `tail -f` and the dashboard
still have something to show.

Offsets count every byte ever written, as a file's would: a reader that follows the stream
keeps its place across writes, and learns it fell behind when what it wants is gone.
"""

from __future__ import annotations

LIMIT = 64 << 10  # per stream: what `tail` shows is 1600 bytes; this keeps a screenful and more


class MemoryLog:
    """The last `limit` bytes written to one stream."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._start = 0  # the offset of _buffer[0] in everything written

    @property
    def size(self) -> int:
        """Every byte ever written (a file's size, had it been one)."""
        return self._start + len(self._buffer)

    @property
    def start(self) -> int:
        """The offset of the oldest byte still kept."""
        return self._start

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data  # copies: a reader's buffer is reused after the call
        extra = len(self._buffer) - self._limit
        if extra > 0:
            del self._buffer[:extra]  # cheap from the front: a bytearray just moves its start
            self._start += extra

    def clear(self) -> None:
        """Forget what is kept, as `clear` truncates a file (offsets go on from the end)."""
        self._start = self.size
        self._buffer.clear()

    def read(self, offset: int, length: int) -> tuple[bytes, int]:
        """(the bytes from `offset`, at most `length` of them, 0 for all; where they start).

        A negative `offset` means that many bytes before the end. What is no longer kept is
        skipped: the data then starts later than asked (see the returned start).
        """
        size = self.size
        start = max(size + offset, 0) if offset < 0 else min(offset, size)
        start = max(start, self._start)
        end = size if length <= 0 else min(size, start + length)
        return bytes(self._buffer[start - self._start:end - self._start]), start
