"""What the master asks of the host: its pidfile and its resource limits."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Iterator


def write_pidfile(path: str | None, pid: int) -> None:
    """Write `pid` to `path` atomically: a reader never sees a half-written file."""
    if not path:
        return
    tmp = f"{path}.{pid}.tmp"
    # At most 0644 whatever the umask (even 0): others may read which pid to signal, never
    # change it; a stricter umask makes it stricter still.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{pid}\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def socket_umask(configured: int | None) -> Iterator[None]:
    """The umask while binding unix sockets (their mode comes from it): `umask` if set, as
    Gunicorn's --umask; else the current one with "others may write" masked out, so a socket
    is never world-writable by accident."""
    wanted = configured if configured is not None else _current_umask() | 0o002
    previous = os.umask(wanted)
    try:
        yield
    finally:
        os.umask(previous)


def _current_umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def remove_pidfile(path: str | None, pid: int) -> None:
    """Remove `path` if it still names `pid` (another master may own it by now)."""
    if not path:
        return
    try:
        with open(path) as handle:
            if handle.read().strip() != str(pid):
                return
        os.unlink(path)
    except OSError:
        pass


def raise_limits(minfds: int, minprocs: int, log: logging.Logger) -> None:
    """Supervisor's minfds/minprocs: raise the soft limits toward the hard ones if needed."""
    wanted_limits = ((resource.RLIMIT_NOFILE, minfds, "minfds"), (resource.RLIMIT_NPROC, minprocs, "minprocs"))
    for limit, wanted, what in wanted_limits:
        soft, hard = resource.getrlimit(limit)
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            continue
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(limit, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("Cannot raise the limit for %s to %d: %s", what, wanted, exc)


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> bool:
    """Make this process the parent of its descendants' orphans (Linux 3.4+), so a worker forked
    twice by the mold becomes the master's own child. False where the kernel cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False
