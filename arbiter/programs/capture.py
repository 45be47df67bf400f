"""Reading a child's stdout/stderr pipe in the master loop, and framing what it read into lines.

The master reads each pipe non-blocking, in large reads into one shared buffer, a bounded number
per loop turn: a child that writes flat out costs a few system calls per megabyte, and cannot
starve the other pipes (Supervisor's most reported flaw is burning a core here).
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable

READ_SIZE = 1 << 20  # one read; also the pipe size we ask for
TURN_BUDGET = 4 << 20  # most bytes read from one pipe in one loop turn
DRAIN_BUDGET = 16 << 20  # most bytes read at once when the child has exited
PARTIAL_LIMIT = 64 << 10  # a "line" longer than this is passed on without waiting for its end

# The master is single-threaded, so every reader can share one read buffer.
_BUFFER = bytearray(READ_SIZE)


def _timestamp(now: float) -> bytes:
    millis = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)).encode() + b",%03d " % millis


class LineFramer:
    """Puts a prefix (a name, a timestamp, or both) at the start of every line of a stream.

    Lines may arrive in pieces across reads; the prefix goes where a line really starts. With
    `whole_lines`, a partial line is held back until its end arrives (so that lines of several
    programs on one shared stream do not mix mid-line), up to PARTIAL_LIMIT bytes.
    """

    def __init__(
        self, name: str = "", timestamps: bool = False, whole_lines: bool = False,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self._name = f"{name} | ".encode() if name else b""
        self._timestamps = timestamps
        self._whole_lines = whole_lines
        self._wallclock = wallclock
        self._at_line_start = True
        self._partial = b""

    @property
    def passthrough(self) -> bool:
        return not (self._name or self._timestamps or self._whole_lines)

    def feed(self, data: bytes) -> bytes:
        """The framed bytes that are ready to write now."""
        if self.passthrough or not data:
            return data
        if self._whole_lines:
            data = self._partial + data
            end = data.rfind(b"\n") + 1
            if end == 0 and len(data) <= PARTIAL_LIMIT:
                self._partial = data
                return b""
            if end == 0:
                data += b"\n"  # break an over-long line rather than hold it forever
                self._partial = b""
            else:
                data, self._partial = data[:end], data[end:]
        return self._prefix_lines(data)

    def flush(self) -> bytes:
        """At end of stream: whatever is held back, ended with a newline."""
        rest, self._partial = self._partial, b""
        return self._prefix_lines(rest + b"\n") if rest else b""

    def _prefix_lines(self, data: bytes) -> bytes:
        # One timestamp per read: every line in it arrived at that moment.
        prefix = self._name + (_timestamp(self._wallclock()) if self._timestamps else b"")
        body = data.replace(b"\n", b"\n" + prefix)
        if self._at_line_start:
            body = prefix + body
        self._at_line_start = data.endswith(b"\n")
        if self._at_line_start:
            body = body[: len(body) - len(prefix)]  # the next line gets its own, later prefix
        return body


class PipeReader:
    """One pipe from one spawned child; its selector `data` is this object (a handler).

    It stays registered until end of file, even after the child was reaped: a child's last
    lines, and the output of grandchildren that still hold the pipe, are not lost.
    """

    def __init__(
        self, fd: int, framer: LineFramer, sink: Callable[[bytes], None],
        selector: selectors.BaseSelector, on_close: Callable[[PipeReader], None] | None = None,
    ) -> None:
        self.fd = fd
        self.closed = False
        self._framer = framer
        self._sink = sink
        self._selector = selector
        self._on_close = on_close
        selector.register(fd, selectors.EVENT_READ, self)

    def __call__(self, key: selectors.SelectorKey, mask: int) -> None:
        self.read(TURN_BUDGET)

    def drain(self) -> None:
        """Read what is in the pipe now (the child has exited), without waiting for more."""
        self.read(DRAIN_BUDGET)

    def read(self, budget: int) -> None:
        total = 0
        while total < budget and not self.closed:
            try:
                size = os.readv(self.fd, [_BUFFER])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0  # EIO and such: nothing more will come
            if size == 0:
                self.close()
                return
            total += size
            data = bytes(memoryview(_BUFFER)[:size])
            framed = self._framer.feed(data)
            if framed:
                self._sink(framed)
            if size < READ_SIZE:
                return  # the pipe is empty; do not spend a system call to hear EAGAIN

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._selector.unregister(self.fd)
        except (KeyError, ValueError):
            pass
        os.close(self.fd)
        rest = self._framer.flush()
        if rest:
            self._sink(rest)
        if self._on_close is not None:
            self._on_close(self)
