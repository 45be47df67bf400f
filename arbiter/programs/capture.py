"""Reading a child's stdout/stderr pipe in the master loop, and framing what it read into lines.

The master reads each pipe non-blocking, in large reads into one shared buffer, a bounded number
per loop turn: a child that writes flat out costs a few system calls per megabyte, and cannot
starve the other pipes (Supervisor's most reported flaw is burning a core here). What a read
returns goes to the log file straight from that buffer when no prefix is added (no copy, no
allocation per read).

Where the bytes go to a log file as they are (no timestamps), the file takes them from the pipe
with splice(2) (`RotatingLogFile.splice_from`): they are never copied into the master at all,
and one system call moves what a pipe holds (up to 512 KiB), while the pipe brings bulk. See
docs/design.md for which settings keep the bytes in the master.

A child that writes many small pieces (one line per write) would wake the master for each few
kilobytes; `PipeReader` batches those: after a small read from a busy pipe it leaves the pipe
alone for a few milliseconds (not watched for data; `ReadPacer`'s timer, itself in the selector,
ends the pause), so that one read gets what dozens of wakeups would have. See `PipeReader` for
the bounds on what that costs.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import selectors
import sys
import time
from collections.abc import Callable

# The pipe size we ask for (process.make_pipe). Measured (benchmarks/programs_bench.py, 500 MiB
# in 64 KiB writes): the master spends ~0.15 s with 256-512 KiB pipes, ~0.2 s with 64 KiB (more
# wakeups) and ~0.4 s with 1 MiB (probably: the bytes have left the cache before they are copied).
READ_SIZE = 512 << 10
READ_CHUNK = 128 << 10  # one read: it and the page it is written to stay in a core's L2 cache
TURN_BUDGET = 4 << 20  # most bytes read from one pipe in one loop turn
DRAIN_BUDGET = 16 << 20  # most bytes read at once when the child has exited
PARTIAL_LIMIT = 64 << 10  # a "line" longer than this is passed on without waiting for its end
# splice(2) to a file costs more than a read and a write for a little data; so a pipe is spliced
# only while it brings bulk: from the third full read in one go (the pipe held >= 384 KiB, more
# than a paced pipe of small writes gathers, see PARK_FILL), until a splice moves < 256 KiB.
SPLICE_AFTER_READS = 3
SPLICE_KEEP = 256 << 10

# Batching small writes (see PipeReader): a busy pipe is left unread for the time it takes, at
# the rate just seen, to fill to 1/PARK_FILL of its size, at most PARK_MAX (the most latency
# batching adds to a line), and not at all when that is under PARK_MIN (not worth a timer).
PARK_MAX = 0.004
PARK_MIN = 0.0005
PARK_FILL = 4
PARK_EARLY = 0.001  # pipes due this soon are read with the one due now: one wakeup for several

# The master is single-threaded, so every reader can share one read buffer.
_BUFFER = bytearray(READ_CHUNK)
_BUFFERS = [_BUFFER]
_VIEW = memoryview(_BUFFER)


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
        # One timestamp per read: every line in it arrived at that moment (or, for a batched
        # busy pipe, up to PARK_MAX before it).
        prefix = self._name + (_timestamp(self._wallclock()) if self._timestamps else b"")
        body = data.replace(b"\n", b"\n" + prefix)
        if self._at_line_start:
            body = prefix + body
        self._at_line_start = data.endswith(b"\n")
        if self._at_line_start:
            body = body[: len(body) - len(prefix)]  # the next line gets its own, later prefix
        return body


class ReadPacer:
    """The pipes left unread for a moment (see `PipeReader`), and a timer to read each again.

    The timer is a timerfd in the master's selector: a paused pipe is read again on time in
    whatever turn of the loop, without the loop having to ask anyone for deadlines.
    Make one with `read_pacer()`.
    """

    def __init__(self, selector: selectors.BaseSelector, timer: _Timer) -> None:
        self._selector = selector
        self._timer = timer
        self._due: dict[PipeReader, float] = {}  # on time.monotonic
        self._armed_at: float | None = None
        self._firing = False
        self._closed = False
        selector.register(timer.fd, selectors.EVENT_READ, self._on_timer)

    def park(self, reader: PipeReader, until: float) -> None:
        self._due[reader] = until
        if not self._firing and (self._armed_at is None or until < self._armed_at):
            self._arm(until)

    def forget(self, reader: PipeReader) -> None:
        self._due.pop(reader, None)

    def close(self) -> None:
        """Stop pacing: the readers still paused go back in the selector."""
        if self._closed:
            return
        self._closed = True
        for reader in list(self._due):
            reader.unpark()
        self._due.clear()
        try:
            self._selector.unregister(self._timer.fd)
        except (KeyError, ValueError):
            pass
        self._timer.close()

    def _on_timer(self, key: selectors.SelectorKey, mask: int) -> None:
        self._timer.clear()
        self._armed_at = None
        self._firing = True  # the readers parked again here: one arming, after them all
        try:
            now = time.monotonic()
            for reader, at in list(self._due.items()):
                if at <= now + PARK_EARLY:
                    del self._due[reader]
                    reader.resume(now)
        finally:
            self._firing = False
            if self._due:
                self._arm(min(self._due.values()))

    def _arm(self, at: float) -> None:
        self._armed_at = at
        self._timer.arm(max(at - time.monotonic(), 1e-6))


def read_pacer(selector: selectors.BaseSelector) -> ReadPacer | None:
    """A pacer for the pipes registered with `selector`; None where no timerfd can be made
    (not Linux): pipes are then read on every wakeup, as they come."""
    try:
        timer = _Timer()
    except OSError:
        return None
    return ReadPacer(selector, timer)


class PipeReader:
    """One pipe from one spawned child; its selector `data` is this object (a handler).

    It stays registered until end of file, even after the child was reaped: a child's last
    lines, and the output of grandchildren that still hold the pipe, are not lost.

    The sink is called with what was read; without a prefix to add that is a memoryview of the
    shared read buffer, valid only during the call (a sink that keeps data must copy it).

    Batching, with a `pacer`: a read from the selector that got a little (a pipe filling at rate
    r, with data read less than PARK_MAX ago) stops watching the pipe for data for
    d = (pipe size / PARK_FILL) / r, at most PARK_MAX; the pacer then reads it, and pauses it
    again for the rate seen over that pause, or watches it for data again when it was empty (the
    child went quiet) or when the rate is too high to pause at all (d < PARK_MIN, or half the
    pipe filled). The bounds:
      - a line waits at most PARK_MAX (plus the loop's own latency) more than without batching;
      - at the rate just seen, a paused pipe fills to 1/PARK_FILL of its size: the writer never
        blocks unless its rate jumps more than PARK_FILL-fold within one pause, and then for at
        most that pause (<= PARK_MAX), after which the pipe is read as fast as it fills;
      - a quiet or slow pipe (less than one read per PARK_MAX) is never paused;
      - end of file and a child's last bytes: a paused pipe is still watched for a hangup (every
        writer gone), which ends the pause; `drain()` (called when the child is reaped) reads
        the pipe whether paused or not; paused or not, a pipe is read until end of file.
    """

    def __init__(
        self, fd: int, framer: LineFramer, sink: Callable[[bytes | memoryview], None],
        selector: selectors.BaseSelector, on_close: Callable[[PipeReader], None] | None = None,
        pacer: ReadPacer | None = None, splice: Callable[[int, int], int] | None = None,
    ) -> None:
        self.fd = fd
        self.closed = False
        self._framer = framer
        self._passthrough = framer.passthrough
        self._sink = sink
        # The sink's own splice_from, when the bytes need not pass through the master; used
        # while the pipe brings bulk (SPLICE_AFTER_READS, SPLICE_KEEP).
        self._splice = splice if framer.passthrough else None
        self._bulk = False
        self._selector = selector
        self._on_close = on_close
        self._pacer = pacer
        self._last_data = float("-inf")  # time.monotonic() of the last read that got data
        size = _pipe_size(fd)
        self._fill = size // PARK_FILL
        self._full = size // 2
        self._paused = False
        selector.register(fd, selectors.EVENT_READ, self)

    @property
    def parked(self) -> bool:
        return self._paused and not self.closed

    def __call__(self, key: selectors.SelectorKey, mask: int) -> None:
        if self._paused:  # a hangup while paused: the writers are gone, read to the end now
            self._pacer.forget(self)  # type: ignore[union-attr]
            self.unpark()
            self.read(TURN_BUDGET, to_end=True)
            return
        got = self.read(TURN_BUDGET)
        pacer = self._pacer
        if got and pacer is not None and not self.closed:
            now = time.monotonic()
            gap, self._last_data = now - self._last_data, now
            if gap < PARK_MAX:  # a busy pipe: more would come before long
                pause = self._pause(got, gap)
                if pause:
                    pacer.park(self, now + pause)
                    # Watched for writability, which a read end never has: data does not wake
                    # the loop, a hangup (every writer gone) still does, and the descriptor
                    # stays in the selector (closed with it in a forked worker).
                    self._selector.modify(self.fd, selectors.EVENT_WRITE, self)
                    self._paused = True

    def resume(self, now: float) -> None:
        """The pacer's turn: read what came during the pause; pause again, or wait in the selector."""
        assert self._pacer is not None
        paused = False
        try:
            got = self.read(TURN_BUDGET)
            if got and not self.closed:
                gap, self._last_data = now - self._last_data, now
                pause = self._pause(got, gap)
                if pause:
                    self._pacer.park(self, now + pause)
                    paused = True
        finally:
            if not paused:
                self.unpark()  # whatever happened, never left unread

    def unpark(self) -> None:
        """Read as data comes again."""
        if self._paused and not self.closed:
            self._paused = False
            self._selector.modify(self.fd, selectors.EVENT_READ, self)

    def _pause(self, got: int, gap: float) -> float:
        """How long to leave the pipe, which delivered `got` bytes in `gap` seconds; 0: do not."""
        if got >= self._full:
            return 0.0  # it may have been full: the writer may have waited already
        pause = gap * self._fill / got
        if pause < PARK_MIN:
            return 0.0
        return pause if pause < PARK_MAX else PARK_MAX

    def drain(self) -> None:
        """Read what is in the pipe now (the child has exited), without waiting for more."""
        self.read(DRAIN_BUDGET, to_end=True)

    def read(self, budget: int, to_end: bool = False) -> int:
        """Read until the pipe is empty, or `budget` bytes; the number of bytes read. `to_end`:
        a short read does not end it (end of file is likely next, and is then seen now)."""
        total = full_reads = 0
        while total < budget and not self.closed:
            if self._bulk:
                assert self._splice is not None
                want = budget - total
                try:
                    moved = self._splice(self.fd, want)
                except (BlockingIOError, InterruptedError):
                    break
                if moved == 0:
                    self.close()
                    break
                if moved > 0:
                    total += moved
                    self._bulk = moved >= SPLICE_KEEP
                    if moved < min(want, READ_SIZE) and not to_end:
                        break  # the pipe is likely empty (or the file near its rotation)
                    continue
                # NO_SPLICE: this time the bytes go through the master.
            try:
                size = os.readv(self.fd, _BUFFERS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                size = 0  # EIO and such: nothing more will come
            if size == 0:
                self.close()
                break
            total += size
            if size == READ_CHUNK and self._splice is not None:
                full_reads += 1
                self._bulk = full_reads >= SPLICE_AFTER_READS  # bulk: splice the rest
            if self._passthrough:
                self._sink(_VIEW if size == READ_CHUNK else _VIEW[:size])  # no copy
            else:
                framed = self._framer.feed(_VIEW[:size].tobytes())
                if framed:
                    self._sink(framed)
            if size < READ_CHUNK and not to_end:
                break  # the pipe is empty; do not spend a system call to hear EAGAIN
        return total

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._paused = False
        try:
            self._selector.unregister(self.fd)
        except (KeyError, ValueError):
            pass
        if self._pacer is not None:
            self._pacer.forget(self)
        os.close(self.fd)
        rest = self._framer.flush()
        if rest:
            self._sink(rest)
        if self._on_close is not None:
            self._on_close(self)


def _pipe_size(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except (AttributeError, OSError):
        return 64 << 10  # Linux's default; not a pipe (tests), or not Linux


class _Timer:
    """A one-shot CLOCK_MONOTONIC timer as a file descriptor (Linux's timerfd): readable once
    it expired. Through ctypes before Python 3.13, which has os.timerfd_create.

    Raises:
        OSError: no timerfd here.
    """

    def __init__(self) -> None:
        flags = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK, TFD_CLOEXEC
        if hasattr(os, "timerfd_create"):
            self.fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=flags)
            self._settime = self._settime_os
            return
        libc = _libc()
        self._libc_settime = libc.timerfd_settime
        self._libc_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        self._libc_settime.restype = ctypes.c_int
        create = libc.timerfd_create
        create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        fd = create(time.CLOCK_MONOTONIC, flags)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self.fd = fd
        self._settime = self._settime_ctypes

    def arm(self, delay: float) -> None:
        """Expire once, `delay` (> 0) seconds from now, replacing any earlier setting."""
        self._settime(delay)

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        os.close(self.fd)

    def _settime_os(self, delay: float) -> None:
        os.timerfd_settime(self.fd, initial=delay)  # type: ignore[attr-defined]

    def _settime_ctypes(self, delay: float) -> None:
        seconds = int(delay)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, int((delay - seconds) * 1e9) or 1))
        if self._libc_settime(self.fd, 0, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        raise OSError("timerfd is Linux only")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create  # noqa: B018 -- AttributeError if missing
    except (OSError, AttributeError) as exc:
        raise OSError(f"no timerfd: {exc}") from None
    return libc
