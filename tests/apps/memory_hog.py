"""A program for the memory_limit test: a parent that holds little, with a child that holds
`MIB` MiB of its own (argv[1]; the memory is the child's, so only a whole-tree measure sees it).
On its stop signal (SIGUSR1 in the test's config) the parent says so, stops the child and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time

MIB = int(sys.argv[1])
child = os.fork()
if child == 0:
    kept = bytearray(os.urandom(1024)) * (MIB * 1024)  # every page written: really this child's
    while True:
        time.sleep(3600)


def stop(sig: int, frame: object) -> None:
    print(f"parent {os.getpid()} got {signal.Signals(sig).name}", flush=True)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    sys.exit(0)


signal.signal(signal.SIGUSR1, stop)
signal.signal(signal.SIGTERM, stop)
print(f"parent {os.getpid()} child {child} holding {MIB} MiB", flush=True)
while True:
    time.sleep(3600)
