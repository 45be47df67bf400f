"""Where captured program output goes: a rotating log file, or the master's own stdout/stderr.

Both are written with `os.write` on raw file descriptors (no Python text layer), and neither
may hurt the master: a write that fails (disk full, permission denied) is reported once,
counted, and the data dropped, while the child's pipe keeps being drained; the master's own
stream is written without blocking, and a reader that stops reading costs dropped lines, not
a stuck master.

A log file can also take a pipe's bytes with `splice(2)` (`RotatingLogFile.splice_from`):
the kernel moves them from the pipe to the file, and they never enter the master. splice
refuses files opened with O_APPEND, which is what keeps a file truncated by an outside
`logrotate copytruncate` free of a hole; so a spliced write goes at the file's size read just
before (lseek SEEK_END), and a truncation that falls between that and the splice is noticed
right after (the file then starts with a hole: lseek SEEK_DATA) and repaired (our bytes moved
to the start). Near `maxbytes` the bytes go through the master again, so that a rotation still
cuts at a line end exactly as before.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable

# Retry opening a file that could not be opened (or written) at most this often.
RETRY_SECONDS = 1.0
# A file may exceed maxbytes by this much to finish a line rather than cut it in two files.
LINE_SLACK = 64 << 10
# What the master's stream may hold while its reader is slow; past this, output is dropped.
PENDING_LIMIT = 1 << 20
# Most bytes one splice(2) moves; a pipe holds at most this (process.make_pipe asks for it).
SPLICE_MAX = 1 << 20  # most bytes one splice(2) moves (a pipe holds at most READ_SIZE)
NO_SPLICE = -1  # splice_from: not now, read the pipe instead


class RotatingLogFile:
    """A log file rotated at `maxbytes` into `path.1` ... `path.<backups>`, as Supervisor does.

    A file is rotated when the next write would not fit (so no empty file is left behind), at
    a line end: a line in progress is finished first (the file may pass `maxbytes` by up to
    LINE_SLACK for it), so lines stay whole unless one is longer than that. `maxbytes=0` never
    rotates; `backups=0` truncates at `maxbytes` (Supervisor's meaning: keep no history).
    """

    def __init__(
        self, path: str, maxbytes: int, backups: int, log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.maxbytes = maxbytes
        self.backups = backups
        self.dropped_bytes = 0
        self.spliced_bytes = 0  # of all written, those that went pipe -> file in the kernel
        self.errors = 0
        self._log = log
        self._clock = clock
        self._fd: int | None = None
        self._splice_fd: int | None = None  # the same file without O_APPEND, for splice(2)
        self._can_splice = True  # False once splice proved impossible for this file
        self._size = 0
        self._mid_line: bool | None = False  # the file does not end with a newline; None: unknown
        self._failing = False
        self._rotation_failing = False
        self._retry_at = 0.0
        self._open()

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`, rotating as needed. Never raises; a failure drops and counts the data.

        `data` may be a view of the reader's buffer: it is written, never kept.
        """
        pos, end = 0, len(data)
        while pos < end:
            if self._fd is None and not self._open():
                self._drop(end - pos)
                return
            stop = end
            if self.maxbytes and self._size + (end - pos) > self.maxbytes and self._clock() >= self._retry_at:
                stop = self._cut(data, pos, end)
            written = self._write_all(data, pos, stop)
            if written < stop - pos:
                self._drop(end - pos - written)
                return
            pos = stop
            if pos < end:
                self._rotate()  # the rest does not fit in this file

    def _cut(self, data: bytes | memoryview, pos: int, end: int) -> int:
        """Where to end this file's share of `data[pos:end]`, which does not all fit."""
        room = max(self.maxbytes - self._size, 0)
        if isinstance(data, memoryview):
            # A view cannot be searched: copy the part that matters (once per rotation).
            stop = min(end, pos + room + LINE_SLACK)
            return pos + self._cut(data[pos:stop].tobytes(), 0, stop - pos)
        last = data.rfind(b"\n", pos, pos + room)
        if last >= 0:
            return last + 1  # the whole lines that fit
        if self._ends_mid_line():
            # Finish the line in progress here, past maxbytes by a little, rather than cut it.
            rest = data.find(b"\n", pos + room, min(end, pos + room + LINE_SLACK))
            return rest + 1 if rest >= 0 else pos + room
        if self._size > 0:
            return pos  # the next line starts the next file
        return pos + room  # one line longer than a whole file: cut it

    def splice_from(self, pipe_fd: int, count: int) -> int:
        """Move up to `count` bytes from the pipe `pipe_fd` into the file in the kernel; the
        bytes moved (0: end of file, every writer gone), or NO_SPLICE when this write must go
        through the master instead (no file open, near a rotation, a file splice cannot write).

        Raises:
            BlockingIOError: the pipe is empty.
        """
        fd = self._splice_fd
        if fd is None:
            return NO_SPLICE
        size = os.lseek(fd, 0, os.SEEK_END)  # the size, without a stat object per splice
        if size != self._size:  # truncated (copytruncate, `clear`) or written by someone else
            self._size, self._mid_line = size, None
        if self.maxbytes:
            room = self.maxbytes - size - LINE_SLACK
            if room <= 0:
                return NO_SPLICE  # the last LINE_SLACK bytes: cut at a line end by write()
            count = min(count, room)
        try:
            moved = os.splice(pipe_fd, fd, min(count, SPLICE_MAX), offset_dst=size, flags=os.SPLICE_F_NONBLOCK)
        except (BlockingIOError, InterruptedError):
            raise BlockingIOError from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # a file system that cannot splice: never again here
                self._can_splice = False
                self._close_splice()
            # Disk full and such: this write goes through the master, which reports and counts
            # the failure as always; splicing resumes once the file is writable again.
            return NO_SPLICE
        if moved and size and _data_starts_after_zero(fd):
            self._fill_hole(size, moved)
        else:
            self._size = size + moved
        if moved:
            self._mid_line = None
            self.spliced_bytes += moved
        return moved

    def _fill_hole(self, at: int, size: int) -> None:
        """The file was truncated between our look at its size and our splice: it holds a hole,
        then our `size` bytes at `at`. Move them to the start, as an O_APPEND write would have."""
        assert self._splice_fd is not None
        try:
            # Through our descriptor's inode, wherever the path points by now.
            with open(f"/proc/self/fd/{self._splice_fd}", "rb") as handle:
                handle.seek(at)
                data = handle.read(size)
            os.pwrite(self._splice_fd, data, 0)
            os.ftruncate(self._splice_fd, len(data))
            self._size = len(data)
        except OSError as exc:
            self._size = os.fstat(self._splice_fd).st_size
            self._log.error("log file %s was truncated during a write and could not be repaired: %s",
                            self.path, exc.strerror)

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the file away)."""
        self._close()
        self._open()

    def close(self) -> None:
        self._close()

    def truncate(self) -> None:
        """Empty the file at `path` and go on writing from its start (supervisorctl `clear`).

        The next rotation counts from zero again; the backups are kept, as Supervisor keeps
        them. The file is truncated in place (same inode), so a `tail -f` follows it.

        Raises:
            OSError: the file cannot be opened.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o666)
        self._close()
        self._fd, self._size, self._mid_line = fd, 0, False
        self._open_splice()

    # ---- internals --------------------------------------------------------------------

    def _open(self, truncate: bool = False) -> bool:
        if self._failing and self._clock() < self._retry_at:
            return False
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        try:
            self._fd = os.open(self.path, flags, 0o666)
            self._size = os.fstat(self._fd).st_size
            self._mid_line = None  # looked up when a rotation needs it
        except OSError as exc:
            self._fd = None
            self._fail(f"cannot open log file {self.path}: {exc.strerror}")
            return False
        self._open_splice()
        return True

    def _open_splice(self) -> None:
        """A second descriptor without O_APPEND, for splice; regular files only."""
        self._close_splice()
        if not self._can_splice or self._fd is None or not stat.S_ISREG(os.fstat(self._fd).st_mode):
            return
        try:
            self._splice_fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return  # written through the master, as before
        if os.fstat(self._splice_fd).st_ino != os.fstat(self._fd).st_ino:  # replaced meanwhile
            self._close_splice()

    def _close_splice(self) -> None:
        if self._splice_fd is not None:
            fd, self._splice_fd = self._splice_fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _ends_mid_line(self) -> bool:
        if self._mid_line is None:
            self._mid_line = self._size > 0 and _last_byte(self.path, self._size) != b"\n"
        return self._mid_line

    def _write_all(self, data: bytes | memoryview, pos: int, stop: int) -> int:
        assert self._fd is not None
        view = data if isinstance(data, memoryview) else memoryview(data)
        if pos or stop != len(view):
            view = view[pos:stop]
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:] if done else view)
        except OSError as exc:
            self._size += done
            if done:
                self._mid_line = view[done - 1] != 10
            self._close()  # reopened on a later write, at most once a RETRY_SECONDS
            self._fail(f"cannot write log file {self.path}: {exc.strerror}")
            return done
        self._size += done
        if done:
            self._mid_line = view[done - 1] != 10  # 10: b"\n"
        if self._failing:
            self._failing = False
            self._log.warning("writing log file %s again; %d bytes of output were dropped",
                              self.path, self.dropped_bytes)
        return done

    def _rotate(self) -> None:
        try:
            if self.backups > 0:
                # The oldest goes first (as Supervisor does), so that no rename replaces a file:
                # renaming over one makes ext4 start writing the renamed file out right then, in
                # the master (its auto_da_alloc), for up to maxbytes of a file still in memory.
                try:
                    os.unlink(f"{self.path}.{self.backups}")
                except FileNotFoundError:
                    pass
                for number in range(self.backups - 1, 0, -1):
                    older = f"{self.path}.{number}"
                    if os.path.exists(older):
                        os.replace(older, f"{self.path}.{number + 1}")
                os.replace(self.path, f"{self.path}.1")
        except OSError as exc:
            # Keep writing to the current file rather than lose output; try again later.
            self.errors += 1
            self._retry_at = self._clock() + RETRY_SECONDS
            if not self._rotation_failing:
                self._rotation_failing = True
                self._log.error("cannot rotate log file %s: %s; it grows past its maxbytes until "
                                "this works again", self.path, exc.strerror)
            return
        self._rotation_failing = False
        self._close()
        self._open(truncate=self.backups == 0)

    def _close(self) -> None:
        self._close_splice()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _fail(self, message: str) -> None:
        self.errors += 1
        self._retry_at = self._clock() + RETRY_SECONDS
        if not self._failing:
            self._failing = True
            self._log.error("%s; program output is dropped until this works again", message)

    def _drop(self, size: int) -> None:
        self.dropped_bytes += size


def _data_starts_after_zero(fd: int) -> bool:
    """The file starts with a hole (a truncation raced our write). False when it is empty (it
    was truncated after our write: the next look at its size sees that) or cannot tell."""
    try:
        return os.lseek(fd, 0, os.SEEK_DATA) > 0
    except OSError:  # ENXIO: no data at all
        return False


def _last_byte(path: str, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1)
    except OSError:
        return b"\n"


class MasterStream:
    """The master's stdout or stderr, shared by every program sent there (`*_logfile=-`).

    It writes through its own non-blocking descriptor for the same file, so the master never
    waits on a slow reader (a terminal, `docker logs`) and other users of fd 1 are unaffected.
    """

    def __init__(self, fd: int, selector: selectors.BaseSelector, log: logging.Logger) -> None:
        self.dropped_bytes = 0
        self._selector = selector
        self._log = log
        self._pending = bytearray()
        self._registered = False
        self._reported = False
        self._sock: socket.socket | None = None
        self._fd = self._own_descriptor(fd)

    def write(self, data: bytes | memoryview) -> None:
        if self._pending:
            self._queue(data)
            return
        sent = self._send(data)
        if sent < len(data):
            self._queue(data[sent:])

    def close(self) -> None:
        if self._registered:
            self._selector.unregister(self._fd)
            self._registered = False
        if self._sock is not None:
            self._sock.close()
        else:
            os.close(self._fd)

    def _own_descriptor(self, fd: int) -> int:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            # A new open file description of the same pipe or terminal: O_NONBLOCK set on it
            # does not leak to the processes that share our fd 1.
            try:
                return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                pass
        own = os.dup(fd)
        if stat.S_ISSOCK(mode):
            self._sock = socket.socket(fileno=own)  # sent with MSG_DONTWAIT, never blocking
        return own

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        try:
            if self._sock is not None:
                return self._sock.send(data, socket.MSG_DONTWAIT)
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._report(f"cannot write program output to the master's output: {exc.strerror}")
            self.dropped_bytes += len(data)
            return len(data)

    def _queue(self, data: bytes | memoryview) -> None:
        if len(self._pending) + len(data) > PENDING_LIMIT:
            self.dropped_bytes += len(data)
            self._report("the master's output is not being read fast enough; dropping program output")
            return
        self._pending += data
        if not self._registered:
            self._selector.register(self._fd, selectors.EVENT_WRITE, self._on_writable)
            self._registered = True

    def _on_writable(self, key: selectors.SelectorKey, mask: int) -> None:
        sent = self._send(memoryview(self._pending))
        del self._pending[:sent]
        if not self._pending and self._registered:
            self._selector.unregister(self._fd)
            self._registered = False
            self._reported = False

    def _report(self, message: str) -> None:
        if not self._reported:
            self._reported = True
            self._log.warning(message)
