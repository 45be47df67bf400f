"""Output capture pieces on their own: rotating files, line framing, the master's stream, pipes."""

from __future__ import annotations

import logging
import os
import re
import selectors
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.programs import logfile
from arbiter.programs.capture import PARTIAL_LIMIT, LineFramer, PipeReader
from arbiter.programs.logfile import MasterStream, RotatingLogFile


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.DEBUG, logger="test.logs")
    return logging.getLogger("test.logs")


def numbered(count: int, width: int = 10) -> bytes:
    return b"".join(b"%0*d\n" % (width - 1, i) for i in range(count))


def all_files(path: Path) -> list[Path]:
    """Oldest first: path.N ... path.1, path."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return backups + ([path] if path.exists() else [])


# ---- RotatingLogFile ----------------------------------------------------------------------


def test_rotation_keeps_lines_whole_and_in_order(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "out.log"
    data = numbered(95)  # 950 bytes in lines of 10, written in pieces that cut lines
    writer = RotatingLogFile(str(path), maxbytes=105, backups=20, log=log)
    for start in range(0, len(data), 37):
        writer.write(data[start:start + 37])
    writer.close()
    files = all_files(path)
    assert b"".join(f.read_bytes() for f in files) == data
    assert all(f.read_bytes().endswith(b"\n") for f in files)  # no line cut in two
    assert all(f.stat().st_size <= 105 + 9 for f in files)  # a line in progress is finished


def test_only_backups_files_are_kept(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "out.log"
    writer = RotatingLogFile(str(path), maxbytes=100, backups=2, log=log)
    data = numbered(50)
    writer.write(data)
    writer.close()
    assert [f.name for f in all_files(path)] == ["out.log.2", "out.log.1", "out.log"]
    assert b"".join(f.read_bytes() for f in all_files(path)) == data[-300:]  # 3 full files


def test_a_line_longer_than_a_file_is_split(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "out.log"
    writer = RotatingLogFile(str(path), maxbytes=10, backups=5, log=log)
    writer.write(b"abc\n" + b"x" * 25 + b"\n")
    writer.close()
    assert [f.read_bytes() for f in all_files(path)] == [b"abc\n", b"x" * 10, b"x" * 10, b"xxxxx\n"]


def test_backups_zero_truncates_and_maxbytes_zero_never_rotates(tmp_path: Path, log: logging.Logger) -> None:
    writer = RotatingLogFile(str(tmp_path / "a.log"), maxbytes=20, backups=0, log=log)
    writer.write(numbered(3))
    writer.close()
    assert (tmp_path / "a.log").read_bytes() == numbered(3)[20:]  # Supervisor: keep no history
    writer = RotatingLogFile(str(tmp_path / "b.log"), maxbytes=0, backups=3, log=log)
    writer.write(numbered(1000))
    writer.close()
    assert (tmp_path / "b.log").stat().st_size == 10_000 and not list(tmp_path.glob("b.log.*"))


def test_a_file_already_too_big_rotates_first(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"old\n" * 50)
    writer = RotatingLogFile(str(path), maxbytes=100, backups=1, log=log)
    writer.write(b"new\n")
    writer.close()
    assert path.read_bytes() == b"new\n" and (tmp_path / "out.log.1").read_bytes() == b"old\n" * 50


def test_open_failure_is_reported_once_and_retried(tmp_path: Path, log: logging.Logger,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    path = tmp_path / "later" / "out.log"
    writer = RotatingLogFile(str(path), maxbytes=0, backups=0, log=log, clock=clock)
    for _ in range(5):
        writer.write(b"lost\n")
    assert writer.dropped_bytes == 25
    assert len([r for r in caplog.records if "cannot open log file" in r.getMessage()]) == 1
    path.parent.mkdir()
    writer.write(b"too soon\n")  # not retried within RETRY_SECONDS: no system call per write
    assert not path.exists()
    clock.now += logfile.RETRY_SECONDS
    writer.write(b"back\n")
    writer.close()
    assert path.read_bytes() == b"back\n" and writer.dropped_bytes == 34
    assert any("again; 34 bytes" in r.getMessage() for r in caplog.records)


def test_write_errors_are_counted_and_reported_once(log: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    writer = RotatingLogFile("/dev/full", maxbytes=0, backups=0, log=log, clock=clock)
    for _ in range(3):
        writer.write(b"x" * 1000)
        clock.now += 5
    writer.close()
    assert writer.dropped_bytes == 3000 and writer.errors == 3
    assert len([r for r in caplog.records if "No space left" in r.getMessage()]) == 1


def test_reopen_follows_logrotate(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "out.log"
    writer = RotatingLogFile(str(path), maxbytes=0, backups=0, log=log)
    writer.write(b"one\n")
    path.rename(tmp_path / "moved.log")
    writer.reopen()
    writer.write(b"two\n")
    writer.close()
    assert path.read_bytes() == b"two\n" and (tmp_path / "moved.log").read_bytes() == b"one\n"


# ---- LineFramer ---------------------------------------------------------------------------

STAMP = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


def test_timestamps_go_where_lines_start_across_reads() -> None:
    framer = LineFramer(timestamps=True, wallclock=lambda: 0.0)
    out = framer.feed(b"par") + framer.feed(b"tial\nwhole\nnext") + framer.feed(b" end\n")
    assert re.fullmatch(rb"(%s)partial\n(%s)whole\n(%s)next end\n" % (STAMP, STAMP, STAMP), out)


def test_whole_lines_with_a_name_hold_partial_lines() -> None:
    framer = LineFramer(name="web", whole_lines=True)
    assert framer.feed(b"hel") == b""
    assert framer.feed(b"lo\nwor") == b"web | hello\n"
    assert framer.feed(b"ld\n") == b"web | world\n"
    assert framer.feed(b"no end") == b""
    assert framer.flush() == b"web | no end\n"


def test_an_endless_line_is_not_held_forever() -> None:
    framer = LineFramer(name="w", whole_lines=True)
    out = framer.feed(b"x" * (PARTIAL_LIMIT + 1))
    assert out == b"w | " + b"x" * (PARTIAL_LIMIT + 1) + b"\n"


def test_no_prefix_is_a_passthrough() -> None:
    framer = LineFramer()
    data = b"abc\ndef"
    assert framer.passthrough and framer.feed(data) is data and framer.flush() == b""


# ---- MasterStream -------------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def test_master_stream_never_blocks_and_drops_past_its_limit(pipe, log, caplog) -> None:
    read_end, write_end = pipe
    selector = selectors.DefaultSelector()
    stream = MasterStream(write_end, selector, log)
    chunk = b"y" * 65536 + b"\n"
    for _ in range(40):  # far more than the pipe and the pending buffer hold together
        stream.write(chunk)
    assert os.get_blocking(write_end)  # the master's own fd is left as it was
    assert stream.dropped_bytes > 0
    assert len([r for r in caplog.records if "not being read" in r.getMessage()]) == 1
    received = 0
    os.set_blocking(read_end, False)
    while True:
        for key, mask in selector.select(0.01):
            key.data(key, mask)
        try:
            received += len(os.read(read_end, 1 << 20))
        except BlockingIOError:
            if not selector.get_map():
                break
    assert received + stream.dropped_bytes == 40 * len(chunk)
    stream.close()
    selector.close()


# ---- PipeReader ---------------------------------------------------------------------------


def test_pipe_reader_reads_to_eof_then_unregisters(pipe) -> None:
    read_end, write_end = pipe
    os.set_blocking(read_end, False)
    selector = selectors.DefaultSelector()
    got: list[bytes] = []
    closed: list[PipeReader] = []
    reader = PipeReader(read_end, LineFramer(name="p", whole_lines=True), got.append, selector, closed.append)
    os.write(write_end, b"one\ntw")
    reader.drain()
    assert got == [b"p | one\n"]
    os.write(write_end, b"o")
    os.close(write_end)
    while not closed:
        for key, mask in selector.select(1):
            key.data(key, mask)
    assert got == [b"p | one\n", b"p | two\n"] and closed == [reader] and not selector.get_map()
    with pytest.raises(OSError):
        os.fstat(read_end)  # closed by the reader
    selector.close()


# ---- output kept in memory (a program logging to "-") ----------------------------------------


def test_memory_log_keeps_the_last_bytes_with_file_like_offsets() -> None:
    from arbiter.control.logs import LogFollower, read_range, tail
    from arbiter.programs.memlog import MemoryLog

    memory = MemoryLog(limit=10)
    follower = LogFollower(memory, 0)
    memory.write(b"0123456789")
    memory.write(memoryview(b"abcdef"))
    assert (memory.size, memory.start) == (16, 6)
    assert memory.read(-4, 0) == (b"cdef", 12)
    assert memory.read(0, 3) == (b"678", 6)  # what was dropped is skipped, and said so
    chunk = read_range(memory, -100, 0)
    assert (chunk.data, chunk.offset, chunk.next_offset, chunk.size) == (b"6789abcdef", 6, 16, 16)
    assert tail(memory, 0, 4) == (b"cdef", 16, True)
    assert follower.poll() == b"6789abcdef" and follower.poll() == b""
    memory.write(b"gh")
    assert follower.poll() == b"gh"
    memory.clear()
    memory.write(b"ij")
    assert follower.poll() == b"ij" and memory.read(-100, 0) == (b"ij", 18)
