"""The loop that plays the master for ProgramManager tests: one selector, every child reaped,
the timers run; and the fixture that makes one and cleans up after it."""

from __future__ import annotations

import logging
import os
import re
import selectors
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from arbiter.programs import ProgramConfig, ProgramManager


class FakeClock:
    """Monotonic seconds that move only when a test says so: timers (startsecs, backoff,
    stopwaitsecs) are tested to the millisecond without waiting for them."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Master:
    """The master's part: one selector loop, reaping every child, running the timers.

    `clock` (a `FakeClock`, or the real monotonic clock by default) is the manager's, and
    times the log lines too, so a test reads timer gaps in the manager's time."""

    def __init__(self, programs: list[ProgramConfig], groups: dict[str, list[str]], tmp: Path,
                 clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        self.lines: list[tuple[float, str]] = []
        self.clock = clock
        self.log = logging.getLogger(f"test.programs.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(_Collect(self.lines, clock))
        self.selector = selectors.DefaultSelector()
        self.manager = ProgramManager(programs, groups, self.selector, self.log, clock=clock,
                                      childlogdir=str(tmp), **kwargs)
        self.reaped: set[int] = set()

    def turn(self, longest: float = 0.05) -> bool:
        """One loop turn; whether anything happened (a pipe read, a child reaped)."""
        deadline = self.manager.next_deadline()
        timeout = longest if deadline is None else min(longest, max(0.0, deadline - self.clock()))
        events = self.selector.select(timeout)
        for key, mask in events:
            key.data(key, mask)
        busy = bool(events)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.reaped.add(pid)
            busy = True
            if self.manager.owns(pid):
                self.manager.child_exited(pid, status)
        self.manager.tick()
        return busy

    def run_until(self, condition: Callable[[], Any], timeout: float = 10.0, *, jump: bool = False) -> None:
        """Turn until `condition` holds, for at most `timeout` real seconds.

        With `jump` (a `FakeClock` only), a turn in which nothing happened moves the clock to
        the next timer: for waits whose timers only matter for being reached (a stop ending in
        SIGKILL), never where a child must act before a timer (a crash within startsecs)."""
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise AssertionError(f"timed out; status={self.manager.status()}\nlog={self.messages()}")
            if not self.turn(0.01 if jump else 0.05) and jump:
                assert isinstance(self.clock, FakeClock)
                deadline = self.manager.next_deadline()
                if deadline is not None and deadline > self.clock():
                    self.clock.now = deadline

    def messages(self, pattern: str = "") -> list[str]:
        return [m for _, m in self.lines if re.search(pattern, m)]

    def times(self, pattern: str) -> list[float]:
        return [t for t, m in self.lines if re.search(pattern, m)]

    def names(self) -> list[str]:
        return [row["fullname"] for row in self.manager.status()]

    def info(self, fullname: str) -> dict[str, Any]:
        rows = [row for row in self.manager.status() if row["fullname"] == fullname]
        assert len(rows) == 1, rows  # a full name is never run twice
        return rows[0]

    def state(self, fullname: str) -> str:
        return str(self.info(fullname)["statename"])

    def pid(self, fullname: str) -> int:
        return int(self.info(fullname)["pid"])

    def running(self, *fullnames: str) -> bool:
        return all(self.state(name) == "RUNNING" for name in fullnames)

    def spawned_pids(self) -> list[int]:
        return [int(m.rsplit(" ", 1)[1]) for m in self.messages("^spawned: ")]

    def close(self) -> None:
        try:
            self.manager.stop_all()
            self.run_until(self.manager.all_stopped, timeout=15, jump=isinstance(self.clock, FakeClock))
        finally:
            # Whatever still runs was started here and is not reaped yet: its pid is ours.
            for pid in set(self.spawned_pids()) - self.reaped:
                try:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            self.manager.close()
            self.selector.close()


class _Collect(logging.Handler):
    def __init__(self, into: list[tuple[float, str]], clock: Callable[[], float]) -> None:
        super().__init__()
        self.into = into
        self.clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append((self.clock(), record.getMessage()))


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Callable[..., Master]]:
    made: list[Master] = []

    def make(*programs: ProgramConfig, groups: dict[str, list[str]] | None = None, **kw: Any) -> Master:
        made.append(Master(list(programs), groups or {}, tmp_path, **kw))
        return made[-1]

    yield make
    for one in made:
        one.close()
