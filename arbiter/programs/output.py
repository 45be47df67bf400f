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

from arbiter.programs import values
from arbiter.programs.capture import LineFramer, PipeReader, ReadPacer
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
    pipes: dict[str, tuple[int, int]] = field(default_factory=dict)  # channel -> (read, write)

    def close_all(self) -> None:
        for read_end, write_end in self.pipes.values():
            os.close(read_end)
            os.close(write_end)
        self.pipes.clear()


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
                if self._sink(channel) is not None:
                    result.pipes[channel] = make_pipe()
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

    def attach(self, spawned: SpawnPipes) -> None:
        """The child has its copies: close ours of the write ends, and read the read ends."""
        for channel, (read_end, write_end) in spawned.pipes.items():
            os.close(write_end)  # so end of file comes when the child (and its children) close
            sink = self._sinks[channel]
            assert sink is not None
            timestamps = self.spec.program.log_timestamps
            if isinstance(sink, MasterStream):
                # Read as is, kept as is in memory, framed for the shared stream on its way.
                tee = _Tee(self.memory[channel], LineFramer(self.spec.name, timestamps, whole_lines=True), sink)
                reader = PipeReader(read_end, LineFramer(), tee.write, self._selector,
                                    on_close=tee.closed(self.readers.remove), pacer=self._pacer)
            else:
                reader = PipeReader(read_end, LineFramer("", timestamps), sink.write, self._selector,
                                    on_close=self.readers.remove, pacer=self._pacer)
            self.readers.append(reader)
            self.pipe_fds[channel] = read_end
        spawned.pipes.clear()

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
        for reader in list(self.readers):
            reader.drain()
            reader.close()
        for sink in self._sinks.values():
            if isinstance(sink, RotatingLogFile):
                sink.close()

    def _sink(self, channel: str) -> Sink | None:
        if channel in self._sinks:
            return self._sinks[channel]
        program, target = self.spec.program, getattr(self.spec, f"{channel}_logfile")
        sink: Sink | None = None
        if target == values.MASTER:
            sink = self._master_stream(channel)
            self.memory.setdefault(channel, MemoryLog())
        elif target == values.AUTO:
            target = self._auto_logfile(channel)
        if target not in (None, values.MASTER):
            self.logpaths[channel] = target
            sink = RotatingLogFile(
                target, getattr(program, f"{channel}_logfile_maxbytes"),
                getattr(program, f"{channel}_logfile_backups"), self._log, self._clock,
            )
        self._sinks[channel] = sink
        return sink

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
