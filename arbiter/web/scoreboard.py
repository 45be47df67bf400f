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

# Offsets inside a slot. Every 8-byte field is 8-byte aligned so a store is never torn on x86-64
# and aarch64.
_PID = struct.Struct("=i")  # offset 0
_GENERATION = struct.Struct("=I")  # offset 4
_STATE = struct.Struct("=B")  # offset 8
_HEARTBEAT = struct.Struct("=q")  # offset 16
_REQUESTS = struct.Struct("=Q")  # offset 24
_CONNECTIONS = struct.Struct("=I")  # offset 32
_BOOTED = struct.Struct("=q")  # offset 40
_SLOT = struct.Struct("=iIB7xqQI4xq16x")
assert _SLOT.size == SLOT_SIZE


class SlotState(enum.IntEnum):
    """What a worker says it is doing. FREE marks an unused slot."""

    FREE = 0
    BOOTING = 1
    READY = 2
    DRAINING = 3
    RETIRING = 4  # reached max_requests: still serving, asks to be replaced, then drained


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


class Slot:
    """A worker's handle on its own slot. Every method is a plain memory store: no system call."""

    __slots__ = ("_buf", "_base", "index")

    def __init__(self, buf: mmap.mmap, index: int) -> None:
        self._buf = buf
        self.index = index
        self._base = index * SLOT_SIZE

    def heartbeat(self) -> None:
        _HEARTBEAT.pack_into(self._buf, self._base + 16, time.monotonic_ns())

    def set_state(self, state: SlotState) -> None:
        _STATE.pack_into(self._buf, self._base + 8, int(state))
        self.heartbeat()

    def add_request(self) -> None:
        offset = self._base + 24
        _REQUESTS.pack_into(self._buf, offset, _REQUESTS.unpack_from(self._buf, offset)[0] + 1)

    def set_connections(self, count: int) -> None:
        _CONNECTIONS.pack_into(self._buf, self._base + 32, count)

    @property
    def requests(self) -> int:
        return _REQUESTS.unpack_from(self._buf, self._base + 24)[0]


class Scoreboard:
    """The master's side: allocates slots to workers and reads them all each loop turn."""

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

    def claim(self, generation: int) -> Slot:
        """Reserve a free slot for a worker about to be forked; the child fills in its pid."""
        for index in range(self.size):
            if _STATE.unpack_from(self._buf, index * SLOT_SIZE + 8)[0] == SlotState.FREE:
                base = index * SLOT_SIZE
                _SLOT.pack_into(self._buf, base, 0, generation, SlotState.BOOTING, time.monotonic_ns(), 0, 0, 0)
                return Slot(self._buf, index)
        raise RuntimeError(f"scoreboard full: all {self.size} worker slots are in use")

    def bind_pid(self, slot: Slot, pid: int) -> None:
        """Record the child's pid and boot time (done by the master right after fork)."""
        _PID.pack_into(self._buf, slot.index * SLOT_SIZE, pid)
        _BOOTED.pack_into(self._buf, slot.index * SLOT_SIZE + 40, time.monotonic_ns())

    def release(self, index: int) -> None:
        _SLOT.pack_into(self._buf, index * SLOT_SIZE, 0, 0, SlotState.FREE, 0, 0, 0, 0)

    def read(self, index: int) -> SlotView:
        pid, generation, state, heartbeat, requests, connections, booted = _SLOT.unpack_from(
            self._buf, index * SLOT_SIZE
        )
        return SlotView(index, pid, generation, SlotState(state), heartbeat, requests, connections, booted)

    def slot(self, index: int) -> Slot:
        return Slot(self._buf, index)

    def close(self) -> None:
        self._buf.close()
        os.close(self.fd)
