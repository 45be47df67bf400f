"""The scoreboard as two processes share it: a worker writing its slot while the master reads."""

from __future__ import annotations

import os
import time

from arbiter.web.scoreboard import Scoreboard, SlotState


def test_a_reader_never_sees_a_heartbeat_or_state_half_written():
    # A worker's store must be one store: a reader between "zero the field" and "write it" saw a
    # heartbeat of 0 (a WORKER TIMEOUT of a healthy worker) or a FREE state. The child writes as
    # fast as it can while the parent reads; before the fix about 2% of reads saw 0.
    board = Scoreboard(slots=2)
    slot = board.claim(1)
    slot.set_state(SlotState.READY)
    pid = os.fork()
    if pid == 0:  # the worker: heartbeats and state changes, flat out, for a bounded time
        try:
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                for _ in range(500):
                    slot.heartbeat()
                    slot.set_state(SlotState.READY)
        finally:
            os._exit(0)
    try:
        reads = zeros = free = 0
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for _ in range(500):
                view = board.read(slot.index)
                zeros += view.heartbeat_ns == 0
                free += view.state == SlotState.FREE
            reads += 500
    finally:
        os.waitpid(pid, 0)
        board.close()
    assert reads > 10_000
    assert (zeros, free) == (0, 0), f"{zeros} zero heartbeats and {free} FREE states in {reads} reads"


def test_a_slot_that_reads_free_is_not_handed_out_while_its_worker_lives():
    # Which slots are taken is the master's record, not what the (worker-written) board says.
    board = Scoreboard(slots=4)
    try:
        first = board.claim(1)
        board.bind_pid(first, 1234)
        board._buf[first.index * 64 + 8] = int(SlotState.FREE)  # what a torn store showed a reader
        second = board.claim(1)
        assert second.index != first.index
        board.release(first.index)
        assert board.claim(1).index == first.index  # released: free for the next worker
    finally:
        board.close()


def test_counters_and_pid_land_in_their_fields():
    board = Scoreboard(slots=2)
    try:
        board.claim(1)
        slot = board.claim(7)
        board.bind_pid(slot, 4242)
        slot.add_request()
        slot.add_request()
        slot.set_connections(3)
        slot.set_state(SlotState.DRAINING)
        view = board.read(slot.index)
        assert (view.index, view.pid, view.generation, view.state) == (1, 4242, 7, SlotState.DRAINING)
        assert (view.requests, view.connections, slot.requests) == (2, 3, 2)
        assert view.heartbeat_ns > 0 and view.booted_ns > 0
        assert board.read(0).state == SlotState.BOOTING
    finally:
        board.close()
