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
