"""Signals for a single-threaded loop: handlers only record the signal; the loop acts on it.

The handler appends to a queue and the interpreter writes a byte to a wake-up socket
(`signal.set_wakeup_fd`), which sits in the master's selector; so a signal ends the select at
once, and the loop, not the handler, does the work (no reentrancy, no locks).
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import signal
import socket
from collections.abc import Iterable, Iterator

MASTER_SIGNALS = (
    signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD,
)


class SignalQueue:
    """Records the master's signals and wakes its selector."""

    def __init__(self, signals: Iterable[int] = MASTER_SIGNALS) -> None:
        self.signals = tuple(signals)
        self._pending: collections.deque[int] = collections.deque()
        self._reader, self._writer = socket.socketpair()
        for sock in (self._reader, self._writer):
            sock.setblocking(False)
            sock.set_inheritable(False)
        self._previous_wakeup = -1

    def install(self, selector: selectors.BaseSelector) -> None:
        for sig in self.signals:
            signal.signal(sig, self._record)
            # Let system calls be restarted rather than fail with EINTR halfway through.
            signal.siginterrupt(sig, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        selector.register(self._reader, selectors.EVENT_READ, self._drain)

    def _record(self, sig: int, frame: object) -> None:
        self._pending.append(sig)

    def _drain(self, key: selectors.SelectorKey, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._reader.recv(4096):
                pass

    def pop_all(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        taken = []
        while self._pending:
            taken.append(self._pending.popleft())
        return taken

    def wake(self) -> None:
        """End the loop's current select() at once (work was queued for it)."""
        with contextlib.suppress(BlockingIOError):
            self._writer.send(b"\0")

    def close_in_child(self) -> None:
        """In a freshly forked child: forget the master's handlers and wake-up socket."""
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        self._reader.close()
        self._writer.close()


@contextlib.contextmanager
def blocked(signals: Iterable[int]) -> Iterator[None]:
    """Block `signals` for the duration, e.g. around fork(), so a child never runs the
    master's handlers before it has reset them."""
    signals = set(signals)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unblock_all() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def exit_description(status: int) -> str:
    """'exit code 3' or 'killed by SIGKILL', from a raw wait status."""
    if os.WIFSIGNALED(status):
        return f"killed by {name(os.WTERMSIG(status))}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
