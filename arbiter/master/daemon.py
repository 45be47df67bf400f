"""`-D/--daemon`: detach from the terminal the classic way (fork, setsid, fork)."""

from __future__ import annotations

import os


def daemonize(keep_stdio: bool = False) -> None:
    """Continue in a grandchild that has no controlling terminal; the callers' process exits 0.

    The second fork makes sure the daemon is not a session leader, so it can never acquire a
    terminal again. Standard streams go to /dev/null: logs belong in --error-logfile. With
    `keep_stdio` (Gunicorn's --enable-stdio-inheritance), stdout and stderr stay where the
    shell redirected them, unless that is a terminal; stdin always goes.
    """
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd == 0 or not keep_stdio or os.isatty(fd):
            os.dup2(null, fd)
    if null > 2:
        os.close(null)
