"""Wiring one process's stdout and stderr: to which sink each goes, and the pipes of each spawn.

The sinks (log files, or the master's own stream) live as long as the process's configuration,
across its restarts; pipes are made for each spawn and read until end of file.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from arbiter.events.types import Event
from arbiter.programs import values
from arbiter.programs.capture import LineFramer, PipeReader, ReadPacer
from arbiter.programs.comm import OutputTap
from arbiter.programs.config import ProcessSpec
from arbiter.programs.logfile import MasterStream, RotatingLogFile
from arbiter.programs.memlog import MemoryLog
from arbiter.programs.process import make_pipe

Sink = RotatingLogFile | MasterStream
CHANNELS = ("stdout", "stderr")


@dataclass
class SpawnPipes:
    """The descriptors for one spawn: what the child gets as fd 1 and 2, and our read ends."""

    stdout: int = subprocess.DEVNULL
    stderr: int = subprocess.DEVNULL
    stdin: int = subprocess.DEVNULL
    pipes: dict[str, tuple[int, int]] = field(default_factory=dict)  # channel -> (read, write)
    stdin_pipe: tuple[int, int] | None = None  # an event listener's: (its read end, our write end)

    def close_all(self) -> None:
        for read_end, write_end in self.pipes.values():
            os.close(read_end)
            os.close(write_end)
        self.pipes.clear()
        if self.stdin_pipe is not None:
            os.close(self.stdin_pipe[0])
            os.close(self.stdin_pipe[1])
            self.stdin_pipe = None


class ProcessOutput:
    """Where one process's output goes.

    Args:
        master_stream: channel -> the master's shared stream for it, for `*_logfile=-`.
        pacer: batches the reads of busy pipes (see `capture.PipeReader`); None: never.
    """

    def __init__(
        self, spec: ProcessSpec, selector: selectors.BaseSelector, log: logging.Logger,
        clock: Callable[[], float], childlogdir: str | None,
        master_stream: Callable[[str], MasterStream | None], pacer: ReadPacer | None = None,
    ) -> None:
        self.spec = spec
        self.readers: list[PipeReader] = []
        self.pipe_fds: dict[str, int] = {}  # channel -> the read end of the current child's pipe
        self.logpaths: dict[str, str] = {}
        self._selector = selector
        self._log = log
        self._clock = clock
        self._childlogdir = childlogdir
        self._master_stream = master_stream
        self._pacer = pacer
        self._sinks: dict[str, Sink | None] = {}
        # What goes to the master's stream is also kept here, for tail (no file to read).
        self.memory: dict[str, MemoryLog] = {}
        # Set by the manager: where events from this output go, and (an event listener's)
        # where its stdout goes, which is the event protocol and no log.
        self.publish: Callable[[Event], None] | None = None
        self.protocol: Callable[[bytes | memoryview], None] | None = None
        self.stdin_fd = -1  # an event listener's stdin, written by the master (non-blocking)

    @property
    def listener(self) -> bool:
        return self.spec.program.listener is not None

    def open_pipes(self) -> SpawnPipes:
        """Pipes for the next spawn. A stream nobody keeps goes to /dev/null: reading it would
        only cost the master.

        Raises:
            OSError: out of file descriptors.
        """
        result = SpawnPipes()
        redirect = self.spec.program.redirect_stderr
        try:
            for channel in CHANNELS if not redirect else ("stdout",):
                if self._sink(channel) is not None or (channel == "stdout" and self.listener):
                    result.pipes[channel] = make_pipe()
            if self.listener:
                # The child's end blocks (it reads events as a file); ours never may.
                child_end, our_end = os.pipe2(os.O_CLOEXEC)
                os.set_blocking(our_end, False)
                result.stdin_pipe = (child_end, our_end)
                result.stdin = child_end
        except OSError:
            result.close_all()
            raise
        if "stdout" in result.pipes:
            result.stdout = result.pipes["stdout"][1]
        if redirect:
            result.stderr = result.stdout
        elif "stderr" in result.pipes:
            result.stderr = result.pipes["stderr"][1]
        return result

    def attach(self, spawned: SpawnPipes, pid: int = 0) -> None:
        """The child (`pid`) has its copies: close ours of the write ends, and read the read ends."""
        if spawned.stdin_pipe is not None:
            self.close_stdin()
            os.close(spawned.stdin_pipe[0])
            self.stdin_fd = spawned.stdin_pipe[1]
            spawned.stdin_pipe = None
        for channel, (read_end, write_end) in spawned.pipes.items():
            os.close(write_end)  # so end of file comes when the child (and its children) close
            self._read(channel, read_end, pid)
        spawned.pipes.clear()

    def adopt(self, fds: dict[str, int], stdin_fd: int, pid: int, logpaths: dict[str, str]) -> None:
        """Take over a running child's pipes after an in-place upgrade (see registry): read the
        read ends `fds` (channel -> fd) again, into the same files (`logpaths`, for AUTO ones)."""
        for channel, path in logpaths.items():
            if path and getattr(self.spec, f"{channel}_logfile") == values.AUTO and channel not in self._sinks:
                self._sinks[channel] = self._file(channel, path)
        for fd in [*fds.values(), stdin_fd]:
            if fd >= 0:
                os.set_inheritable(fd, False)  # kept open across exec on purpose; not further
        if stdin_fd >= 0:
            self.stdin_fd = stdin_fd
        for channel, fd in fds.items():
            if fd >= 0:
                self._sink(channel)
                self._read(channel, fd, pid)

    def _read(self, channel: str, read_end: int, pid: int) -> None:
        """Read `read_end`, the pipe of `channel` of child `pid`, into its sink."""
        self.pipe_fds[channel] = read_end
        if channel == "stdout" and self.listener:
            assert self.protocol is not None
            self.readers.append(PipeReader(read_end, LineFramer(), self.protocol, self._selector,
                                           on_close=self.readers.remove))
            return
        sink = self._sinks[channel]
        if sink is None:  # an adopted child whose output the new configuration discards
            self.readers.append(PipeReader(read_end, LineFramer(), lambda data: None, self._selector,
                                           on_close=self.readers.remove))
            return
        timestamps = self.spec.program.log_timestamps
        if isinstance(sink, MasterStream):
            # Read as is, kept as is in memory, framed for the shared stream on its way.
            tee = _Tee(self.memory[channel], LineFramer(self.spec.name, timestamps, whole_lines=True), sink)
            write = self._tap(channel, pid, tee.write)
            reader = PipeReader(read_end, LineFramer(), write, self._selector,
                                on_close=tee.closed(self.readers.remove), pacer=self._pacer)
        else:
            write = self._tap(channel, pid, sink.write)
            # Without timestamps and with no events to make, the file takes the bytes straight
            # from the pipe (splice): they never enter the master (see capture.py).
            splice = sink.splice_from if write == sink.write else None
            reader = PipeReader(read_end, LineFramer("", timestamps), write, self._selector,
                                on_close=self.readers.remove, pacer=self._pacer, splice=splice)
        self.readers.append(reader)

    def _tap(self, channel: str, pid: int,
             write: Callable[[bytes | memoryview], None]) -> Callable[[bytes | memoryview], None]:
        """`write`, or a tap in front of it when this stream makes events (see comm.py)."""
        program = self.spec.program
        log_events = bool(getattr(program, f"{channel}_events_enabled"))
        maxbytes = int(getattr(program, f"{channel}_capture_maxbytes"))
        if self.publish is None or not (log_events or maxbytes > 0):
            return write
        return OutputTap(channel, self.spec.name, self.spec.group, pid, self.publish, write,
                         log_events=log_events, capture_maxbytes=maxbytes).write

    def close_stdin(self) -> None:
        if self.stdin_fd >= 0:
            os.close(self.stdin_fd)
            self.stdin_fd = -1

    def drain(self) -> None:
        for reader in list(self.readers):
            reader.drain()

    @property
    def dropped_bytes(self) -> int:
        return sum(sink.dropped_bytes for sink in self._sinks.values() if isinstance(sink, RotatingLogFile))

    def path(self, channel: str) -> str | None:
        """The file `channel` goes to (an AUTO one is made now if it was not yet); None when
        it is discarded, sent to the master's own stream, or (stderr) redirected to stdout."""
        self._sink(channel)
        return self.logpaths.get(channel)

    def clear(self, channel: str) -> None:
        """Empty `channel`'s log file; the child, which writes only to its pipe, notices nothing.

        Raises:
            OSError: the file cannot be opened.
        """
        sink = self._sink(channel)
        if isinstance(sink, RotatingLogFile):
            sink.truncate()
        elif channel in self.memory:
            self.memory[channel].clear()

    def reopen(self) -> None:
        for sink in self._sinks.values():
            if isinstance(sink, RotatingLogFile):
                sink.reopen()

    def close(self) -> None:
        self.close_stdin()
        for reader in list(self.readers):
            reader.drain()
            reader.close()
        for sink in self._sinks.values():
            if isinstance(sink, RotatingLogFile):
                sink.close()

    def _sink(self, channel: str) -> Sink | None:
        if channel in self._sinks:
            return self._sinks[channel]
        target = getattr(self.spec, f"{channel}_logfile")
        sink: Sink | None = None
        if channel == "stdout" and self.listener:
            target = None  # a listener's stdout is the event protocol, not a log
        if target == values.MASTER:
            sink = self._master_stream(channel)
            self.memory.setdefault(channel, MemoryLog())
        elif target == values.AUTO:
            target = self._auto_logfile(channel)
        if target not in (None, values.MASTER):
            sink = self._file(channel, target)
        self._sinks[channel] = sink
        return sink

    def _file(self, channel: str, path: str) -> RotatingLogFile:
        program = self.spec.program
        self.logpaths[channel] = path
        return RotatingLogFile(path, getattr(program, f"{channel}_logfile_maxbytes"),
                               getattr(program, f"{channel}_logfile_backups"), self._log, self._clock)

    def _auto_logfile(self, channel: str) -> str | None:
        """Supervisor's AUTO: a file of the process's own, named after it, in childlogdir."""
        folder = self._childlogdir or tempfile.gettempdir()
        try:
            fd, path = tempfile.mkstemp(prefix=f"{self.spec.name}-{channel}---arbiter-",
                                        suffix=".log", dir=folder)
        except OSError as exc:
            self._log.error("cannot make an AUTO log file for %s in %s: %s; its %s is discarded",
                            self.spec.name, folder, exc.strerror, channel)
            return None
        os.close(fd)
        return path


class _Tee:
    """One pipe's bytes to memory as they are, and to the master's shared stream framed (each
    line whole, prefixed with the program's name)."""

    def __init__(self, memory: MemoryLog, framer: LineFramer, sink: MasterStream) -> None:
        self._memory, self._framer, self._sink = memory, framer, sink

    def write(self, data: bytes | memoryview) -> None:
        self._memory.write(data)
        framed = self._framer.feed(bytes(data))
        if framed:
            self._sink.write(framed)

    def closed(self, then: Callable[[PipeReader], None]) -> Callable[[PipeReader], None]:
        """The reader's on_close: pass on a last line without its end, then `then`."""
        def on_close(reader: PipeReader) -> None:
            rest = self._framer.flush()
            if rest:
                self._sink.write(rest)
            then(reader)
        return on_close


class MasterStreams:
    """channel -> the master's own stream for it, made once and shared by every program."""

    def __init__(self, selector: selectors.BaseSelector, log: logging.Logger, fds: dict[str, int]) -> None:
        self._selector = selector
        self._log = log
        self._fds = fds
        self._made: dict[str, MasterStream | None] = {}

    def __call__(self, channel: str) -> MasterStream | None:
        if channel not in self._made:
            try:
                self._made[channel] = MasterStream(self._fds[channel], self._selector, self._log)
            except OSError as exc:
                self._log.error("cannot send program %s to the master's: %s; it is discarded",
                                channel, exc.strerror)
                self._made[channel] = None
        return self._made[channel]

    def close(self) -> None:
        for stream in self._made.values():
            if stream is not None:
                stream.close()
        self._made.clear()
