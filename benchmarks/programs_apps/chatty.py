"""A program that floods its stdout, for benchmarks/programs_bench.py.

    python3 chatty.py chunks|lines TOTAL_BYTES GO_FIFO

It first opens GO_FIFO for reading, which blocks until the benchmark opens it for writing: the
flood starts on the benchmark's word, after this interpreter and the master have started.
Then it writes exactly TOTAL_BYTES (a multiple of 64 KiB) of 64-byte lines to fd 1:
`chunks` in 65,536-byte writes (1,024 lines each), `lines` one line per write(2).

The writes are raw `os.write` calls on a prebuilt buffer, in an unrolled loop: no Python I/O
layer, no formatting. One 64-byte write to a pipe costs ~1.2 us in the kernel (the reader's
wakeup included) against ~0.3 us of Python around it, so a C writer would be only ~20% faster.
"""

import os
import sys

LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"  # 64 bytes
CHUNK = LINE * 1024  # 64 KiB


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    mode, total, fifo = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    assert len(LINE) == 64 and total % len(CHUNK) == 0, "TOTAL_BYTES must be a multiple of 64 KiB"
    os.close(os.open(fifo, os.O_RDONLY))  # wait for "go"
    if mode == "chunks":
        for _ in range(total // len(CHUNK)):
            write_all(1, CHUNK)
        return
    # One line per write; a blocking pipe write of <= PIPE_BUF bytes is whole, never partial.
    w, line = os.write, LINE
    for _ in range(total // (len(LINE) * 8)):
        w(1, line); w(1, line); w(1, line); w(1, line)  # noqa: E702
        w(1, line); w(1, line); w(1, line); w(1, line)  # noqa: E702


if __name__ == "__main__":
    main()
