"""Program output written pipe -> file by splice(2): exact, ordered, rotated at line ends,
safe under an outside `copytruncate`, and a write error still reported without blocking."""

from __future__ import annotations

import logging
import os
import random
import selectors
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.programs.capture import LineFramer, PipeReader
from arbiter.programs.logfile import LINE_SLACK, NO_SPLICE, RotatingLogFile
from arbiter.programs.process import make_pipe

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="splice(2) is Linux only")


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test.programs.splice")


@pytest.fixture
def selector() -> Iterator[selectors.BaseSelector]:
    sel = selectors.DefaultSelector()
    yield sel
    sel.close()


def writer(script: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """A child writing to a pipe made as the master makes them; (child, our read end)."""
    read_end, write_end = make_pipe()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=write_end)
    os.close(write_end)
    return child, read_end


def capture_all(child: subprocess.Popen[bytes], read_end: int, logfile: RotatingLogFile,
                selector: selectors.BaseSelector, during: object = None, timeout: float = 60) -> None:
    """Read the child's pipe into `logfile` (the splice path) until end of file."""
    reader = PipeReader(read_end, LineFramer(), logfile.write, selector, splice=logfile.splice_from)
    end = time.monotonic() + timeout
    try:
        while not reader.closed:
            assert time.monotonic() < end, "timed out"
            for key, mask in selector.select(0.1):
                key.data(key, mask)
            if callable(during):
                during()
    finally:
        if not reader.closed:
            reader.close()
        child.kill()
        child.wait()


def test_splice_moves_the_pipe_into_the_file_and_sees_end_of_file(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "out.log"
    logfile = RotatingLogFile(str(path), 0, 0, log)
    read_end, write_end = make_pipe()
    try:
        data = os.urandom(300_000)
        os.write(write_end, data)
        moved = 0
        while moved < len(data):
            moved += logfile.splice_from(read_end, 1 << 20)
        with pytest.raises(BlockingIOError):  # empty, a writer still there
            logfile.splice_from(read_end, 1 << 20)
        os.close(write_end)
        write_end = -1
        assert logfile.splice_from(read_end, 1 << 20) == 0  # every writer gone
        assert path.read_bytes() == data
        assert logfile.spliced_bytes == len(data)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        logfile.close()


# Lines of 1 to 300 bytes, written in 512 KiB pieces (a line may straddle two writes): bulk,
# so the reader moves to splice after its first full read.
FLOOD = """
    import os, random, sys
    rng = random.Random(int(sys.argv[1]))
    out = bytearray()
    for n in range(int(sys.argv[2])):
        out += b"%d:" % n + bytes([97 + rng.randrange(26)]) * rng.randrange(300) + b"\\n"
    view = memoryview(out)
    for i in range(0, len(out), 1 << 19):
        os.write(1, view[i:i + (1 << 19)])
"""


def expected_flood(seed: int, lines: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    for n in range(lines):
        out += b"%d:" % n + bytes([97 + rng.randrange(26)]) * rng.randrange(300) + b"\n"
    return bytes(out)


def test_spliced_output_rotates_at_line_ends_with_every_byte_in_order(
        tmp_path: Path, log: logging.Logger, selector: selectors.BaseSelector) -> None:
    maxbytes = 300_000
    path = tmp_path / "flood.log"
    logfile = RotatingLogFile(str(path), maxbytes, 50, log)
    child, read_end = writer(FLOOD, "7", "40000")  # ~6 MB: ~20 rotations
    capture_all(child, read_end, logfile, selector)
    logfile.close()
    files = sorted(tmp_path.glob("flood.log.*"), key=lambda p: -int(p.suffix[1:])) + [path]
    assert len(files) > 10
    assert b"".join(f.read_bytes() for f in files) == expected_flood(7, 40000)
    for f in files[:-1]:
        body = f.read_bytes()
        assert body.endswith(b"\n")  # rotated at a line end
        assert maxbytes - 400 < len(body) <= maxbytes  # filled with whole lines up to maxbytes
    # Much went pipe -> file in the kernel: all but each file's last LINE_SLACK could have, and
    # the reader moves back to reads whenever a splice brings little.
    assert logfile.spliced_bytes > len(files) * (maxbytes - LINE_SLACK) // 3


COUNTER = """
    import os, sys, time
    for n in range(int(sys.argv[1])):
        os.write(1, b"%08d\\n" % n * 70000)  # 630 KB: bulk, spliced
        time.sleep(0.002)
"""


def test_copytruncate_by_someone_else_leaves_no_hole(tmp_path: Path, log: logging.Logger,
                                                     selector: selectors.BaseSelector) -> None:
    """logrotate's copytruncate empties the file in place; what comes after starts the file
    again at offset 0 (with O_APPEND that is the kernel's doing; with splice it is ours)."""
    path = tmp_path / "app.log"
    logfile = RotatingLogFile(str(path), 0, 0, log)
    child, read_end = writer(COUNTER, "100")  # 63 MB
    truncations = []

    def truncate_now_and_then() -> None:
        size = path.stat().st_size
        if size > 5_000_000:
            os.truncate(path, 0)  # what `logrotate copytruncate` does after its copy
            truncations.append(size)

    capture_all(child, read_end, logfile, selector, during=truncate_now_and_then)
    logfile.close()
    body = path.read_bytes()
    assert len(truncations) >= 3
    assert b"\0" not in body  # no hole of NULs where the old content was
    stream = b"".join(b"%08d\n" % n * 70000 for n in range(100))
    assert body and stream.endswith(body)  # what came after the last truncation, all of it
    assert logfile.spliced_bytes > 0


def test_a_truncation_just_before_a_splice_is_repaired(tmp_path: Path, log: logging.Logger) -> None:
    """The state that race leaves: the file truncated, then our bytes written at the old size
    (a hole before them). splice_from sees it (SEEK_DATA) and moves the bytes to the start."""
    path = tmp_path / "race.log"
    logfile = RotatingLogFile(str(path), 0, 0, log)
    logfile.write(b"old line\n" * 1000)
    os.truncate(path, 0)
    ours = b"new line\n" * 100
    with open(path, "r+b") as other:  # our racing splice, writing at the size it had read
        other.seek(9000)
        other.write(ours)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) > 0  # what splice_from checks after each splice
    finally:
        os.close(fd)
    logfile._fill_hole(9000, len(ours))
    assert path.read_bytes() == ours
    logfile.write(b"next\n")
    assert path.read_bytes() == ours + b"next\n"
    logfile.close()


FILE_LIMIT = """
    import logging, os, resource, selectors, signal, subprocess, sys
    from arbiter.programs.capture import LineFramer, PipeReader
    from arbiter.programs.logfile import RotatingLogFile
    from arbiter.programs.process import make_pipe

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    # Writing past RLIMIT_FSIZE fails with EFBIG, as a full disk fails with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    logfile = RotatingLogFile(sys.argv[1], 0, 0, logging.getLogger("capture"))
    read_end, write_end = make_pipe()
    child = subprocess.Popen([sys.executable, "-c", "import os; os.write(1, bytes(4 << 20))"],
                             stdout=write_end)  # bulk, to a pipe: no limit there
    os.close(write_end)
    selector = selectors.DefaultSelector()
    reader = PipeReader(read_end, LineFramer(), logfile.write, selector, splice=logfile.splice_from)
    while not reader.closed:
        for key, mask in selector.select(5):
            key.data(key, mask)
    print("child", child.wait(), "dropped", logfile.dropped_bytes, "spliced", logfile.spliced_bytes, flush=True)
"""


def test_a_file_that_cannot_grow_is_reported_and_the_child_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "full.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(FILE_LIMIT), str(path)],
                            capture_output=True, timeout=60, env=env)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert path.stat().st_size == 1 << 20  # up to the limit, spliced
    assert f"child 0 dropped {3 << 20} spliced " in out, out + err  # the rest, dropped
    assert 0 < int(out.split("spliced ")[1]) < 1 << 20  # the first 128 KiB read, then spliced
    assert err.count("cannot write log file") == 1, err


def test_no_splice_for_what_is_not_a_regular_file(log: logging.Logger) -> None:
    logfile = RotatingLogFile("/dev/null", 0, 0, log)
    try:
        read_end, write_end = make_pipe()
        os.write(write_end, b"x\n")
        assert logfile.splice_from(read_end, 100) == NO_SPLICE
        os.close(read_end)
        os.close(write_end)
    finally:
        logfile.close()


def test_a_file_emptied_right_after_a_splice_is_not_taken_for_a_hole(tmp_path: Path) -> None:
    """lseek(SEEK_DATA) on an empty file fails with ENXIO: truncated after our write, not before."""
    from arbiter.programs.logfile import _data_starts_after_zero

    fd = os.open(tmp_path / "empty.log", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert not _data_starts_after_zero(fd)
        os.pwrite(fd, b"x\n", 8192)  # a hole, then data
        assert _data_starts_after_zero(fd)
    finally:
        os.close(fd)
