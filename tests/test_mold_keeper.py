"""The master's side of reforking (arbiter/master/mold.py), driven without a process: the pool
harness of test_pool.py (fake clock, fake spawner and kill, a real in-memory scoreboard), with the
test writing slots as the workers and the mold would. tests/test_refork.py has the real thing."""

from __future__ import annotations

import os
import signal

from test_pool import Harness, exit_status

from arbiter.master.mold import PROMOTE_ACK
from arbiter.web.mold import REQUEST, ForkRequest
from arbiter.web.scoreboard import SlotState


def started(**settings: object) -> Harness:
    h = Harness(**settings)
    h.pool.molds.subreaper = True  # never make the test process a subreaper
    h.turn()
    h.ready_all()
    h.turn()
    return h


def serve(h: Harness, pid: int, requests: int) -> None:
    for _ in range(requests):
        h.pool.workers[pid].slot.add_request()


def fork_requests(h: Harness) -> list[ForkRequest]:
    data = b""
    try:
        while chunk := os.read(h.pool.molds.requests_r, 4096):
            data += chunk
    except BlockingIOError:
        pass
    return [ForkRequest(*REQUEST.unpack_from(data, i)) for i in range(0, len(data), REQUEST.size)]


def promote(h: Harness, pid: int) -> None:
    """The worker does what SIGURG asks: drains, then reports MOLD."""
    h.say(pid, SlotState.DRAINING)
    h.turn()
    h.say(pid, SlotState.MOLD)
    h.turn()


def test_a_worker_is_promoted_at_the_threshold_and_new_workers_come_from_it() -> None:
    h = started(refork_after=(50,))
    first, second = sorted(h.pool.workers)
    serve(h, first, 49)
    h.turn()
    assert (first, signal.SIGURG) not in h.signals
    serve(h, first, 1)
    h.turn()
    assert (first, signal.SIGURG) in h.signals
    assert h.pool.molds.holding()
    count = len(h.pool.workers)
    h.turn()
    assert len(h.pool.workers) == count  # no spawn from the master while the promotion runs
    promote(h, first)
    assert h.pool.molds.mold is h.pool.workers[first] and h.pool.workers[first].role == "mold"
    # The promoted worker's replacement is asked of the mold, under a placeholder key; and the
    # one worker the master forked is to be replaced too (it serves until its successor is READY).
    assert h.pool.workers[second].wants_retirement
    requests = fork_requests(h)
    assert len(requests) == 2
    for request in requests:
        assert h.pool.workers[-(request.slot + 1)].forked_from == first
    # Each registers through its slot and is re-keyed by its pid.
    for pid, request in zip((777, 778), requests, strict=True):
        h.board.slot(request.slot).register(pid)
    h.turn()
    assert {777, 778} <= set(h.pool.workers) and all(pid > 0 for pid in h.pool.workers)
    h.say(777, SlotState.READY)
    h.turn()
    assert (second, signal.SIGTERM) not in h.signals  # not before both successors are ready
    h.say(778, SlotState.READY)
    h.turn()
    assert (second, signal.SIGTERM) in h.signals
    assert h.pool.stats["reforks"] == 1 and h.pool.stats["refork_replacements"] == 1


def test_thresholds_apply_in_turn_then_never_again() -> None:
    h = started(refork_after=(10, 20), workers=1)
    (first,) = h.pool.workers
    serve(h, first, 10)
    h.turn()
    promote(h, first)
    (request,) = fork_requests(h)
    h.board.slot(request.slot).register(500)
    h.turn()
    h.say(500, SlotState.READY)
    serve(h, 500, 20)
    h.turn()
    assert (500, signal.SIGURG) in h.signals  # the second threshold, on a mold-forked worker
    promote(h, 500)
    assert (first, signal.SIGTERM) in h.signals  # the previous mold is retired
    (request,) = fork_requests(h)
    h.board.slot(request.slot).register(501)
    h.turn()
    h.say(501, SlotState.READY)
    serve(h, 501, 1000)
    h.turn()
    assert (501, signal.SIGURG) not in h.signals


def test_a_promotion_the_worker_ignores_turns_reforking_off_and_it_keeps_serving() -> None:
    h = started(refork_after=(5,))
    first, _ = sorted(h.pool.workers)
    serve(h, first, 5)
    h.turn()
    h.clock.advance(PROMOTE_ACK + 0.1)
    h.beat(first)
    h.turn()
    worker = h.pool.workers[first]
    assert worker.role == "worker" and not worker.wants_retirement and not h.pool.molds.holding()
    assert h.pool.molds.disabled and "ignored the promotion" in h.pool.molds.disabled
    serve(h, first, 100)
    h.turn()
    assert h.signals.count((first, signal.SIGURG)) == 1


def test_the_mold_dies_forking_falls_back_and_a_worker_is_promoted_again() -> None:
    h = started(refork_after=(5,), workers=1)
    (first,) = h.pool.workers
    serve(h, first, 5)
    h.turn()
    promote(h, first)
    (request,) = fork_requests(h)
    h.board.slot(request.slot).register(600)
    h.turn()
    h.say(600, SlotState.READY)
    h.turn()
    assert h.pool.exited(first, exit_status(9)) is None
    assert h.pool.molds.mold is None
    h.pool.target = 2  # a new worker now comes from the master (the fake spawner)
    h.turn()
    assert not fork_requests(h)
    assert any(w.forked_from == 0 and w.pid > 0 for w in h.pool.workers.values() if w.pid != 600)
    serve(h, 600, 5)
    h.ready_all()
    h.turn()
    assert (600, signal.SIGURG) in h.signals  # promoted again at the same threshold


def test_a_mold_that_does_not_answer_within_the_timeout_is_retired() -> None:
    h = started(refork_after=(5,), workers=1, timeout=5.0)
    (first,) = h.pool.workers
    serve(h, first, 5)
    h.turn()
    promote(h, first)
    (request,) = fork_requests(h)
    placeholder = -(request.slot + 1)
    h.clock.advance(5.1)
    h.beat(first)
    h.turn()
    # Dropped (its slot freed); the mold is retired and the worker comes from the master.
    assert placeholder not in h.pool.workers and h.board.read(request.slot).state in (SlotState.FREE,
                                                                                      SlotState.BOOTING)
    assert (first, signal.SIGTERM) in h.signals and h.pool.molds.mold is None
    assert not fork_requests(h)
    assert [w for w in h.pool.workers.values() if w.role == "worker" and w.pid > 0 and w.forked_from == 0]


def test_a_worker_that_exits_before_the_master_reads_its_pid_is_not_lost() -> None:
    h = started(refork_after=(5,), workers=1)
    (first,) = h.pool.workers
    serve(h, first, 5)
    h.turn()
    promote(h, first)
    (request,) = fork_requests(h)
    h.board.slot(request.slot).register(900)
    assert h.pool.exited(900, exit_status(3)) is None  # reaped before this pass: an unknown pid
    h.turn()
    assert 900 not in h.pool.workers  # re-keyed, then taken as exited at once
    assert all(w.pid != 900 for w in h.pool.workers.values())


def test_signals_never_reach_a_placeholder() -> None:
    h = started(refork_after=(5,), workers=1)
    (first,) = h.pool.workers
    serve(h, first, 5)
    h.turn()
    promote(h, first)
    fork_requests(h)
    h.pool.stop_all(h.clock())
    assert all(pid > 0 for pid, _ in h.signals)
