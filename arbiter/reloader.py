"""`--reload` for development: a watcher process that prints one line per batch of changes.

watchfiles runs a thread of its own, and the master must never hold a thread (a fork would
copy it half-way), so the watching happens in this separate process; the master reads its
output in its selector and starts a rolling reload for each line.
"""

from __future__ import annotations

import sys


def main(master_pid: int, paths: list[str]) -> None:
    import os
    import signal

    from watchfiles import PythonFilter, watch

    from arbiter.workers.base import set_parent_death_signal

    set_parent_death_signal(signal.SIGTERM)  # never outlive the master
    if os.getppid() != master_pid:  # it died before that took effect
        return

    for changes in watch(*paths, watch_filter=PythonFilter(), raise_interrupt=False):
        names = sorted({path for _, path in changes})
        print("changed " + " ".join(names), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
