"""Reading program pipes cheaply: no copy per read, and small writes batched by `ReadPacer`."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import selectors
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from arbiter.programs import ProgramConfig, ProgramManager, capture
from arbiter.programs.capture import LineFramer, PipeReader, read_pacer
from arbiter.programs.logfile import RotatingLogFile
from arbiter.programs.states import Autorestart

LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"  # 64 bytes
SLACK = 0.05  # scheduling noise allowed on top of a bound, on a loaded test machine


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test.programs.capture")


@pytest.fixture
def selector() -> Iterator[selectors.BaseSelector]:
    sel = selectors.DefaultSelector()
    yield sel
    sel.close()


@pytest.fixture
def big_pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def pump(selector: selectors.BaseSelector, done: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        for key, mask in selector.select(0.05):
            key.data(key, mask)


class Sink:
    """Collects what a reader passes on, with when it came (copied: views are only lent)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.types: set[type] = set()
        self.times: list[tuple[float, int]] = []

    def __call__(self, data: bytes | memoryview) -> None:
        self.types.add(type(data))
        self.data += data
        self.times.append((time.monotonic(), len(self.data)))

    def arrived(self, size: int) -> float:
        return next(t for t, total in self.times if total >= size)


# ---- no copy per read ---------------------------------------------------------------------


def test_unframed_output_is_passed_on_from_the_read_buffer(big_pipe, selector) -> None:
    read_end, write_end = big_pipe
    sink = Sink()
    reader = PipeReader(read_end, LineFramer(), sink, selector)
    payload = LINE * 5000  # more than one read
    os.write(write_end, payload)
    reader.drain()
    assert bytes(sink.data) == payload and sink.types == {memoryview}
    os.close(write_end)
    reader.drain()
    assert reader.closed and not selector.get_map()


def test_framed_output_is_still_prefixed_across_reads(big_pipe, selector) -> None:
    read_end, write_end = big_pipe
    sink = Sink()
    reader = PipeReader(read_end, LineFramer(name="p", whole_lines=True), sink, selector)
    os.write(write_end, b"one\ntw")
    reader.drain()
    os.write(write_end, b"o\n")
    os.close(write_end)
    reader.drain()
    assert bytes(sink.data) == b"p | one\np | two\n" and sink.types == {bytes} and reader.closed


@pytest.mark.parametrize("seed", range(4))
def test_rotating_from_views_cuts_exactly_as_from_bytes(tmp_path: Path, log: logging.Logger, seed: int) -> None:
    rng = random.Random(seed)
    lines = [b"%d " % i + b"x" * rng.choice([0, 5, 50, 300, 3000]) + b"\n" for i in range(3000)]
    stream = b"".join(lines)
    files = {}
    for kind in ("bytes", "view"):
        folder = tmp_path / kind
        folder.mkdir()
        target = RotatingLogFile(str(folder / "out.log"), 20_000, 500, log)
        buffer = bytearray(8192)
        chunks = random.Random(seed)  # the same reads for both
        pos = 0
        while pos < len(stream):
            size = chunks.randint(1, 8192)
            piece = stream[pos:pos + size]
            if kind == "bytes":
                target.write(piece)
            else:
                buffer[:len(piece)] = piece
                target.write(memoryview(buffer)[:len(piece)])
            pos += size
        target.close()
        files[kind] = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert files["view"] == files["bytes"]
    assert len(files["view"]) > 10


# ---- batching small writes ----------------------------------------------------------------


def make_busy(reader: PipeReader, write_end: int, selector: selectors.BaseSelector) -> None:
    """Two small reads in quick succession: the second one parks the pipe."""
    for _ in range(2):
        os.write(write_end, LINE)
        for key, mask in selector.select(1.0):
            key.data(key, mask)


@pytest.fixture
def paced(big_pipe, selector, monkeypatch) -> Iterator[tuple[PipeReader, int, Sink, capture.ReadPacer]]:
    # A longer most-pause than the real one: "two reads within PARK_MAX" must hold on a slow CI.
    monkeypatch.setattr(capture, "PARK_MAX", 0.02)
    pacer = read_pacer(selector)
    if pacer is None:
        pytest.skip("no timerfd here: no batching")
    read_end, write_end = big_pipe
    sink = Sink()
    closed: list[PipeReader] = []
    reader = PipeReader(read_end, LineFramer(), sink, selector, closed.append, pacer=pacer)
    yield reader, write_end, sink, pacer
    pacer.close()


def test_a_pipe_written_in_small_pieces_is_read_in_batches_within_park_max(paced, selector) -> None:
    reader, write_end, sink, _ = paced
    make_busy(reader, write_end, selector)
    assert reader.parked and selector.get_key(reader.fd).events == selectors.EVENT_WRITE
    written = 2 * len(LINE)
    sent_at = []
    for _ in range(200):  # the master is not woken for these
        os.write(write_end, LINE)
        written += len(LINE)
        sent_at.append((time.monotonic(), written))
    reads_before = len(sink.times)
    pump(selector, lambda: len(sink.data) == written)
    assert len(sink.times) - reads_before <= 2  # one read (two if a pause ended mid-writes)
    for at, size in sent_at:
        assert sink.arrived(size) - at <= capture.PARK_MAX + SLACK


def test_a_pipe_that_goes_quiet_goes_back_in_the_selector(paced, selector) -> None:
    reader, write_end, sink, _ = paced
    make_busy(reader, write_end, selector)
    assert reader.parked
    pump(selector, lambda: not reader.parked, timeout=1.0)  # the pacer found it empty
    assert selector.get_key(reader.fd).events == selectors.EVENT_READ
    os.write(write_end, b"later\n")  # an idle pipe is read at once, as before
    sent = time.monotonic()
    pump(selector, lambda: sink.data.endswith(b"later\n"))
    assert sink.arrived(len(sink.data)) - sent < SLACK


def test_a_fast_writer_is_never_paused(paced, selector) -> None:
    reader, write_end, sink, _ = paced
    if fcntl.fcntl(reader.fd, fcntl.F_GETPIPE_SZ) < 1 << 20:
        pytest.skip("a 1 MiB pipe is refused here")
    for _ in range(3):  # more than half the pipe per read: the writer may be waiting on it
        os.write(write_end, LINE * 9000)
        for key, mask in selector.select(1.0):
            key.data(key, mask)
        assert not reader.parked


def test_end_of_file_ends_a_pause_at_once(paced, selector) -> None:
    reader, write_end, sink, pacer = paced
    make_busy(reader, write_end, selector)
    assert reader.parked
    pacer.park(reader, time.monotonic() + 60)  # a pause far longer than any real one
    os.write(write_end, b"last words")
    os.close(write_end)  # every writer gone: a hangup, which a paused pipe is still watched for
    closed_at = time.monotonic()
    pump(selector, lambda: reader.closed)
    assert time.monotonic() - closed_at < SLACK
    assert sink.data.endswith(b"last words") and not reader.parked


def test_drain_reads_a_paused_pipe_at_once(paced, selector) -> None:
    reader, write_end, sink, _ = paced
    make_busy(reader, write_end, selector)
    os.write(write_end, b"exit message\n")
    reader.drain()  # what the manager does when it reaped the child
    assert sink.data.endswith(b"exit message\n")


def test_closing_the_pacer_puts_paused_pipes_back(paced, selector) -> None:
    reader, write_end, sink, pacer = paced
    make_busy(reader, write_end, selector)
    assert reader.parked
    pacer.close()
    assert not reader.parked and selector.get_key(reader.fd).events == selectors.EVENT_READ
    reader.close()


# ---- end to end: a ProgramManager driven by a tiny loop -------------------------------------

CHATTY = (
    "import os, sys\n"
    "line = b'%s'\n"
    "for _ in range(int(sys.argv[1])): os.write(1, line)\n"
) % LINE.decode().replace("\n", "\\n")


def run_flood(tmp_path: Path, log: logging.Logger, lines: int, **kw) -> tuple[int, bytes]:
    selector = selectors.DefaultSelector()
    program = ProgramConfig(name="chatty", command=(sys.executable, "-c", CHATTY, str(lines)),
                            stdout_logfile=str(tmp_path / "chatty.log"), redirect_stderr=True, startsecs=0,
                            autorestart=Autorestart.NEVER, **kw)
    manager = ProgramManager([program], {}, selector, log, childlogdir=str(tmp_path))
    manager.start_autostart()
    turns, exited, end = 0, False, time.monotonic() + 60
    try:
        while not exited:
            assert time.monotonic() < end, "timed out"
            deadline = manager.next_deadline()
            wait = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            for key, mask in selector.select(wait):
                key.data(key, mask)
            turns += 1
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid and manager.owns(pid):
                manager.child_exited(pid, status)
                exited = True
            manager.tick()
    finally:
        manager.stop_all()
        manager.close()
        selector.close()
    files = sorted(tmp_path.glob("chatty.log.*"), key=lambda p: -int(p.suffix[1:])) + [tmp_path / "chatty.log"]
    return turns, b"".join(f.read_bytes() for f in files)


def test_one_line_per_write_is_captured_whole_in_few_wakeups(tmp_path: Path, log: logging.Logger) -> None:
    lines = 100_000  # 6.4 MB in 100,000 writes
    turns, logged = run_flood(tmp_path, log, lines, stdout_logfile_maxbytes=1_000_000,
                              stdout_logfile_backups=10)
    assert logged == LINE * lines  # every line, in order, across rotations
    # Read as it comes, this takes ~3,000 turns (~30 lines a wakeup); batched, a few dozen.
    assert turns < lines / 250, f"{turns} loop turns for {lines} writes"
