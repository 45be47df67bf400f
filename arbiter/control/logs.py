"""Reading log files for the control API without ever waiting on them.

Reads are bounded (`MAX_READ` per request) so that asking for a 2 GB log costs the master one
megabyte, not a stall. A log is a file, or (a program whose output goes through the master's
own stream, with no file of its own) the `MemoryLog` of its last bytes, read by the same rules.
A `LogFollower` remembers where it is in a file and is polled once per loop turn: it returns
what was appended since, and notices when the file was truncated (size below our position) or
rotated (the path now names another inode) and starts over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from arbiter.control.backend import ControlError
from arbiter.programs.memlog import MemoryLog

Source = str | MemoryLog  # a log file's path, or a program's output kept in memory

MAX_READ = 1 << 20
DEFAULT_TAIL = 1600  # Supervisor's default for `tail` and `maintail`


@dataclass(frozen=True)
class Chunk:
    data: bytes
    offset: int       # where `data` starts in the file
    next_offset: int  # where to read next
    size: int         # the file's size when read


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ControlError("NO_FILE", f"log file {path} does not exist (yet)") from None
    except OSError as exc:
        raise ControlError("FAILED", f"cannot read log file {path}: {exc.strerror}") from None


def read_range(path: Source, offset: int, length: int) -> Chunk:
    """Supervisor's `readFile` rules: a negative `offset` reads the last -offset bytes (and then
    `length` must be 0); `length` 0 reads to the end. At most `MAX_READ` bytes are returned:
    continue from `next_offset`.

    Raises:
        ControlError: BAD_ARGUMENTS, NO_FILE or FAILED.
    """
    if (offset < 0 and length) or length < 0:
        raise ControlError("BAD_ARGUMENTS", "a negative offset reads the end of the log: length must be 0; "
                           f"length must not be negative (got offset={offset}, length={length})")
    if isinstance(path, MemoryLog):
        data, start = path.read(offset, min(length, MAX_READ) if length else MAX_READ)
        return Chunk(data, start, start + len(data), path.size)
    fd = _open(path)
    try:
        size = os.fstat(fd).st_size
        start = max(size + offset, 0) if offset < 0 else offset
        want = (size - start) if (length == 0 or offset < 0) else length
        want = max(0, min(want, MAX_READ))
        data = os.pread(fd, want, start) if want else b""
    except OSError as exc:
        raise ControlError("FAILED", f"cannot read log file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return Chunk(data, start, start + len(data), size)


def tail(path: Source, offset: int, length: int) -> tuple[bytes, int, bool]:
    """Supervisor's `tailFile`: up to `length` bytes from `offset`; when the file grew past
    offset+length, the last `length` bytes and overflow=True. Returns (data, file size, overflow)."""
    length = min(max(length, 0), MAX_READ)
    if isinstance(path, MemoryLog):
        size = path.size
        overflow = size > offset + length
        start = max(size - length, 0) if overflow or offset + length > size else max(offset, 0)
        data = path.read(start, length)[0] if length else b""
        return data, size, overflow
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return b"", offset, False  # Supervisor answers an empty tail for a missing file
    try:
        size = os.fstat(fd).st_size
        overflow = size > offset + length
        if overflow:
            offset = size - 1
        if offset + length > size:
            if offset > size - 1:
                length = 0
            offset = size - length
        offset, length = max(offset, 0), max(length, 0)
        data = os.pread(fd, length, offset) if length else b""
        return data, size, overflow
    finally:
        os.close(fd)


class LogFollower:
    """Everything appended to one log file, read a bounded piece at a time."""

    def __init__(self, path: Source, offset: int) -> None:
        """Start at `offset` (negative: that many bytes before the current end).

        Raises:
            ControlError: NO_FILE or FAILED when the file cannot be opened now.
        """
        self._memory = path if isinstance(path, MemoryLog) else None
        self.path = "(the output kept in memory)" if isinstance(path, MemoryLog) else path
        if isinstance(path, MemoryLog):
            self._fd: int | None = None
            size = path.size
        else:
            self._fd = _open(path)
            size = os.fstat(self._fd).st_size
        self.position = max(size + offset, 0) if offset < 0 else min(offset, size)

    def poll(self, limit: int = 64 << 10) -> bytes:
        """Bytes appended since the last poll (at most `limit`); b"" when nothing is new."""
        if self._memory is not None:
            # What was dropped before it was read is skipped, as a rotated-away file would be.
            data, start = self._memory.read(self.position, limit)
            self.position = start + len(data)
            return data
        if self._fd is None:
            self._reopen()
            if self._fd is None:
                return b""
        size = os.fstat(self._fd).st_size
        if size < self.position:
            self.position = 0  # truncated in place (copytruncate, or a `clear`)
        if size > self.position:
            data = os.pread(self._fd, min(limit, size - self.position), self.position)
            self.position += len(data)
            return data
        if self._rotated():
            # The old file is read to its end; what comes next is written to the new one.
            self.close()
            self._reopen()
            return self.poll(limit) if self._fd is not None else b""
        return b""

    def _rotated(self) -> bool:
        assert self._fd is not None
        try:
            current = os.stat(self.path)
        except OSError:
            return True  # moved away and not yet recreated
        mine = os.fstat(self._fd)
        return (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev)

    def _reopen(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            self.position = 0
        except OSError:
            self._fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
