"""Worker churn: replace workers as fast as they can be forked, and check the master's view of
them stays right (no timeout of a worker that just booted, no slot handed out twice)."""

from __future__ import annotations

import os
import re
import time

from load import Load

CHURN_SECONDS = float(os.environ.get("TEST_CHURN_SECONDS", "10"))  # longer to measure a rate


def test_max_requests_1_churn_has_no_spurious_worker_timeout(arbiter):
    # Every request retires its worker, so the master claims and releases slots while workers
    # write theirs, thousands of times. A timeout of 5 s is far above a boot (a fork with the app
    # preloaded), so any WORKER TIMEOUT here is the master misreading a slot.
    master = arbiter(["wsgi_app:app", "-k", "sync", "-w", "4", "--max-requests", "1", "--timeout", "5",
                      "--preload", "--log-level", "info"])
    master.wait_ready(4)
    with Load(master.port, keepalive=3, fresh=3, slow=0, max_seconds=CHURN_SECONDS + 30) as load:
        deadline = time.monotonic() + CHURN_SECONDS
        while time.monotonic() < deadline and master.proc.poll() is None:
            time.sleep(0.2)
        result = load.stop()
    log = master.log()
    replaced = len(re.findall(r"Max requests reached", log))
    assert replaced > 200, f"too little churn to mean anything: {replaced} replacements"
    assert "WORKER TIMEOUT" not in log, [line for line in log.splitlines() if "WORKER TIMEOUT" in line][:5]
    assert master.proc.poll() is None
    assert result.ok > 200


def test_pool_churn_with_real_processes_writing_their_slots_flat_out():
    # The master's own logic (WorkerPool.check/manage/exited, the real scoreboard, the real clock)
    # against real child processes that write their slots as fast as they can and exit after a
    # moment, so slots are claimed and released all the time. Before the fix a reader saw a
    # heartbeat of 0 in a few percent of reads (a WORKER TIMEOUT) and a FREE state on a live slot
    # (the slot handed out twice); this fails within the first second then.
    import logging
    import random
    import signal as signals

    from arbiter.config.settings import Config
    from arbiter.master.pool import WorkerPool, WorkerProcess
    from arbiter.web.scoreboard import Scoreboard, SlotState

    board = Scoreboard(slots=64)

    def spawner(worker: WorkerProcess) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                slot = worker.slot
                end = time.monotonic() + random.uniform(0.05, 0.2)
                while time.monotonic() < end:
                    for _ in range(100):
                        slot.set_state(SlotState.READY)
                        slot.heartbeat()
                slot.set_state(SlotState.DRAINING)
            finally:
                os._exit(0)
        return pid

    pool = WorkerPool(cfg=Config(workers=6, timeout=5.0), server=None, listeners=[], scoreboard=board,
                      close_in_child=lambda: None, preloaded=None, log=logging.getLogger("test.churn"),
                      spawner=spawner)
    replaced = 0
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            now = time.monotonic()
            pool.check(now, 0.0)
            pool.manage(now)
            indexes = [w.slot.index for w in pool.workers.values()]
            assert len(indexes) == len(set(indexes)), f"one slot, two workers: {sorted(indexes)}"
            for index in indexes:  # what the master reads of a live worker's slot: never torn
                view = board.read(index)
                assert view.state != SlotState.FREE and view.heartbeat_ns != 0, view
            for pid in list(pool.workers):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pool.exited(pid, 0)
                    replaced += 1
    finally:
        for pid in list(pool.workers):
            try:
                os.kill(pid, signals.SIGKILL)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        pool.close()
        board.close()
    assert replaced > 20
    assert pool.stats["timeouts"] == 0
