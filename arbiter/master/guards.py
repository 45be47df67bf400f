"""Guards: pure decisions from what the master already samples, returned as actions.

The master samples each worker's memory and the pool's busy ratio and backlog in its
housekeeping pass; these classes turn the samples into decisions ("replace worker 123",
"one worker more") and the words to log them with, touching no OS and reading no clock of
their own (the caller passes `now`), so they are tested with plain numbers. The master carries
the actions out through the pool's replace-before-drain path, as `--max-requests` does.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

MEMORY_STRIKES = 3  # samples in a row over the limit before a worker is replaced


def mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class Replace:
    """Replace one worker (its replacement ready first, then it drains)."""

    pid: int
    reason: str  # the metrics label: "memory", "request_timeout", ...
    message: str


@dataclass
class MemoryGuard:
    """A worker over `limit` bytes for `MEMORY_STRIKES` samples in a row is replaced once.

    `subject` and `remedy` word the message (a program is "restarted", not "replaced")."""

    limit: int
    subject: str = "Worker (pid:{pid})"
    remedy: str = "replacing it"
    strikes: dict[int, int] = field(default_factory=dict)
    replaced: set[int] = field(default_factory=set)

    def observe(self, samples: dict[int, int], measure: str = "uss") -> list[Replace]:
        """`samples` maps each live worker's pid to its memory in bytes."""
        actions = []
        for pid in list(self.strikes):
            if pid not in samples:
                del self.strikes[pid]  # gone: forget it
        self.replaced &= set(samples)
        for pid, size in samples.items():
            if self.limit <= 0 or size <= self.limit:
                self.strikes.pop(pid, None)
                continue
            self.strikes[pid] = self.strikes.get(pid, 0) + 1
            if self.strikes[pid] >= MEMORY_STRIKES and pid not in self.replaced:
                self.replaced.add(pid)
                actions.append(Replace(pid, "memory", (
                    f"{self.subject.format(pid=pid)} uses {mib(size)} ({measure.upper()}), over the limit of "
                    f"{mib(self.limit)} for {MEMORY_STRIKES} samples: {self.remedy}")))
        return actions


@dataclass(frozen=True)
class Scale:
    """Change the number of serving workers by `delta` (+1 or -1)."""

    delta: int
    message: str


@dataclass
class Autoscaler:
    """Adds a worker a second while the pool is saturated, removes one a second once it has
    been idle for `idle_after` seconds; between `floor` and `ceiling` workers.

    Saturated: the mean busy ratio over the last `window` seconds is above `high`, or
    connections wait in a listen backlog. Idle: the mean is below `low`."""

    floor: int
    ceiling: int
    idle_after: float = 30.0
    window: float = 1.0
    high: float = 0.9
    low: float = 0.5
    step: float = 1.0  # at most one change a second
    samples: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    last_change: float = float("-inf")
    idle_since: float | None = None

    def mean(self) -> float:
        return sum(ratio for _, ratio in self.samples) / len(self.samples) if self.samples else 0.0

    def observe(self, now: float, busy_ratio: float, backlog: int, workers: int) -> Scale | None:
        """One sample: the pool's busy ratio now, the connections queued in listen backlogs, and
        the number of serving workers. Returns a decision, at most one per `step` seconds."""
        self.samples.append((now, busy_ratio))
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()
        mean = self.mean()
        if mean >= self.low or backlog > 0:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        if now - self.last_change < self.step:
            return None
        if (mean > self.high or backlog > 0) and workers < self.ceiling:
            self.last_change = now
            cause = f"{backlog} connections waiting" if backlog > 0 else f"busy ratio {mean:.2f} > {self.high}"
            return Scale(+1, f"Autoscale: {cause}; {workers} -> {workers + 1} workers (max {self.ceiling})")
        if self.idle_since is not None and now - self.idle_since >= self.idle_after and workers > self.floor:
            self.last_change = now
            return Scale(-1, f"Autoscale: busy ratio {mean:.2f} < {self.low} for {now - self.idle_since:.0f} s; "
                             f"{workers} -> {workers - 1} workers (min {self.floor})")
        return None
