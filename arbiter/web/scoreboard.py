"""Shared-memory scoreboard: one fixed slot per worker, written by the worker, read by the master.

Why not Gunicorn's heartbeat temp files: a worker touching a file costs a system call per beat
and gives false timeouts when /tmp is slow; a slot in shared memory costs a store. The slot also
carries readiness (for rolling reloads) and counters (for status and metrics).

The region is a memfd mapped MAP_SHARED before any fork, so every worker sees the master's
pages; being a file descriptor, it can also be handed across the master's own re-exec.

Times are `time.monotonic_ns()`: CLOCK_MONOTONIC is one clock for the whole machine, so a
worker's stamp and the master's "now" are comparable.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import time
from dataclasses import dataclass

SLOT_SIZE = 64
DEFAULT_SLOTS = 1024

# Layout of a slot: pid i32 @0, generation u32 @4, state u8 @8, heartbeat i64 @16, requests u64
# @24, connections u32 @32, in_progress u32 @36, booted i64 @40, capacity u32 @48,
# request_timeouts u64 @56. Every field is aligned to its size.
_SLOT = struct.Struct("=iIB7xqQIIqI4xQ")
assert _SLOT.size == SLOT_SIZE

# A field a live worker writes while the master reads it is stored through a memoryview cast to
# the field's type: one aligned store of the whole field, which a reader never sees half done.
# Never `struct.pack_into` for those: it zeroes the field first and then writes it, so a reader
# in between sees 0 (a heartbeat of 0 reads as "silent since the machine booted", a state of 0 as
# FREE), once in every few thousand writes under load.
_Q_HEARTBEAT, _Q_REQUESTS, _Q_BOOTED, _Q_REQUEST_TIMEOUTS = 2, 3, 5, 7  # in 8-byte words from the slot's start
_W_PID, _W_GENERATION, _W_CONNECTIONS, _W_IN_PROGRESS, _W_CAPACITY = 0, 1, 8, 9, 12  # in 4-byte words
_B_STATE = 8  # in bytes


class _Views:
    """Typed views of the whole board, one per field width; closed with the board."""

    __slots__ = ("b", "i32", "u32", "i64", "u64")

    def __init__(self, buf: mmap.mmap) -> None:
        whole = memoryview(buf)
        self.b = whole.cast("B")
        self.i32 = whole.cast("i")
        self.u32 = whole.cast("I")
        self.i64 = whole.cast("q")
        self.u64 = whole.cast("Q")
        whole.release()

    def release(self) -> None:
        for view in (self.b, self.i32, self.u32, self.i64, self.u64):
            view.release()


class SlotState(enum.IntEnum):
    """What a worker says it is doing. FREE marks an unused slot."""

    FREE = 0
    BOOTING = 1
    READY = 2
    DRAINING = 3
    RETIRING = 4  # reached max_requests: still serving, asks to be replaced, then drained
    MOLD = 5  # reforking: no longer serves; forks new workers when the master asks


@dataclass(frozen=True)
class SlotView:
    """A snapshot of one slot, as the master reads it."""

    index: int
    pid: int
    generation: int
    state: SlotState
    heartbeat_ns: int
    requests: int
    connections: int
    booted_ns: int
    in_progress: int = 0  # requests being answered now
    capacity: int = 0  # how many it can answer at once (0: it did not say)
    request_timeouts: int = 0  # requests this worker stopped at --request-timeout

    @property
    def busy_ratio(self) -> float:
        """Requests in progress over capacity: 1.0 is a worker that can take no more."""
        return min(1.0, self.in_progress / self.capacity) if self.capacity else 0.0


class Slot:
    """A worker's handle on its own slot. Every method is a plain memory store: no system call."""

    __slots__ = ("_v", "_q", "_w", "_b", "index")

    def __init__(self, views: _Views, index: int) -> None:
        self._v = views
        self.index = index
        self._b = index * SLOT_SIZE
        self._w = index * SLOT_SIZE // 4
        self._q = index * SLOT_SIZE // 8

    def heartbeat(self, at_ns: int | None = None) -> None:
        """Stamp the slot with now (`at_ns`: a given time, for tests with a fake clock)."""
        self._v.i64[self._q + _Q_HEARTBEAT] = time.monotonic_ns() if at_ns is None else at_ns

    def set_state(self, state: SlotState, at_ns: int | None = None) -> None:
        # The heartbeat first: a master that sees the new state also sees a fresh stamp.
        self.heartbeat(at_ns)
        self._v.b[self._b + _B_STATE] = int(state)

    def add_request(self) -> None:
        self._v.u64[self._q + _Q_REQUESTS] += 1

    def add_request_timeout(self) -> None:
        """Count a request stopped at `--request-timeout` (the master counts and logs the rise)."""
        self._v.u64[self._q + _Q_REQUEST_TIMEOUTS] += 1

    def set_connections(self, count: int) -> None:
        self._v.u32[self._w + _W_CONNECTIONS] = count

    def set_in_progress(self, count: int) -> None:
        """Requests being answered now (the autoscaler's busy ratio is this over capacity)."""
        self._v.u32[self._w + _W_IN_PROGRESS] = count

    def set_capacity(self, count: int) -> None:
        """How many requests this worker can answer at once: 1 for sync, threads for gthread..."""
        self._v.u32[self._w + _W_CAPACITY] = count

    @property
    def requests(self) -> int:
        value: int = self._v.u64[self._q + _Q_REQUESTS]
        return value

    # -- reforking: a worker forked by the mold registers itself ---------------------------

    def sibling(self, index: int) -> Slot:
        """Another slot of the same board (the mold fills in the slot the master named)."""
        return Slot(self._v, index)

    @property
    def pid(self) -> int:
        value: int = self._v.i32[self._w + _W_PID]
        return value

    @property
    def generation(self) -> int:
        value: int = self._v.u32[self._w + _W_GENERATION]
        return value

    def register(self, pid: int) -> None:
        """A mold-forked worker says who it is: the master learns its pid from here."""
        self._v.i32[self._w + _W_PID] = pid


class Scoreboard:
    """The master's side: allocates slots to workers and reads them all each loop turn.

    Which slots are taken is the master's own record, never read back from the board: the board
    is written by the workers, and a worker's word must not decide which slot the next one gets.
    """

    def __init__(self, slots: int = DEFAULT_SLOTS, fd: int | None = None) -> None:
        """Create a new board, or adopt the one behind `fd` (after the master re-executed itself).

        Untouched slots cost nothing: the kernel backs a page only once it is written.
        """
        self.size = slots
        if fd is None:
            fd = os.memfd_create("arbiter-scoreboard", 0)  # not CLOEXEC: re-exec passes it on
            os.ftruncate(fd, slots * SLOT_SIZE)
        self.fd = fd
        self._buf = mmap.mmap(fd, slots * SLOT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._views = _Views(self._buf)
        self._taken: set[int] = set()

    def claim(self, generation: int) -> Slot:
        """Reserve a free slot for a worker about to be forked; the child fills in its pid.

        Raises:
            RuntimeError: every slot is taken.
        """
        for index in range(self.size):
            if index not in self._taken:
                self._taken.add(index)
                _SLOT.pack_into(self._buf, index * SLOT_SIZE, 0, generation, SlotState.BOOTING,
                                time.monotonic_ns(), 0, 0, 0, 0, 0, 0)  # no worker uses it: a whole write is safe
                return Slot(self._views, index)
        raise RuntimeError(f"scoreboard full: all {self.size} worker slots are in use")

    def bind_pid(self, slot: Slot, pid: int) -> None:
        """Record the child's pid and boot time (done by the master right after fork)."""
        self._views.i32[slot.index * SLOT_SIZE // 4 + _W_PID] = pid
        self._views.i64[slot.index * SLOT_SIZE // 8 + _Q_BOOTED] = time.monotonic_ns()

    def release(self, index: int) -> None:
        """Free a slot whose worker has been reaped (nothing writes it any more)."""
        _SLOT.pack_into(self._buf, index * SLOT_SIZE, 0, 0, SlotState.FREE, 0, 0, 0, 0, 0, 0, 0)
        self._taken.discard(index)

    def read(self, index: int) -> SlotView:
        (pid, generation, state, heartbeat, requests, connections, in_progress, booted, capacity,
         timeouts) = _SLOT.unpack_from(self._buf, index * SLOT_SIZE)
        return SlotView(index, pid, generation, SlotState(state), heartbeat, requests, connections, booted,
                        in_progress, capacity, timeouts)

    def slot(self, index: int) -> Slot:
        """The slot of a worker adopted from the previous master image: taken from now on."""
        self._taken.add(index)
        return Slot(self._views, index)

    def close(self) -> None:
        self._views.release()
        self._buf.close()
        os.close(self.fd)
