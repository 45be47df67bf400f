"""The guards against real masters, workers and clients: a leaking worker replaced with no
request failing, a pool that grows under load and shrinks after it, and what /metrics says.

Memory is measured here with psutil (its own reading of /proc), not with Arbiter's reader, so
the test does not grade Arbiter's arithmetic with Arbiter's arithmetic.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import http_get, run_arbiter, wait_until
from load import Load
from prometheus_client.parser import text_string_to_metric_families

MiB = 1 << 20


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def metrics(sock: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """/metrics read with Prometheus' own parser: name -> [(labels, value)]."""
    conn = UnixHTTPConnection(str(sock))
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def restarts(sock: Path) -> dict[str, float]:
    return {labels["reason"]: value for labels, value in metrics(sock)["arbiter_worker_restarts_total"]}


def test_a_leaking_worker_is_replaced_within_10_s_of_crossing_the_limit_and_no_request_fails(arbiter, tmp_path):
    sock = tmp_path / "control.sock"
    master = arbiter(["guards_app:app", "-w", "2", "--max-worker-memory", "150", "--keep-alive", "5",
                      "--control-socket", str(sock)])
    master.wait_ready(2)
    with Load(master.port, keepalive=4, fresh=2, slow=0) as load:
        load.wait_for_requests(50)
        # One keep-alive connection: every /leak lands on the same worker, 20 MiB more each time.
        leaker = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
        crossed_at, leaking_pid = None, 0
        for _ in range(30):
            leaker.request("GET", "/leak")
            response = leaker.getresponse()
            body = response.read()
            assert response.status == 200, body
            leaking_pid = int(body.split()[0][4:])
            if psutil.Process(leaking_pid).memory_full_info().uss > 150 * MiB:
                crossed_at = time.monotonic()
                break
        leaker.close()
        assert crossed_at is not None, "the worker never grew past 150 MiB"
        master.wait_workers(lambda w: leaking_pid not in w and len(w) == 2, timeout=10,
                            what="the leaking worker replaced")
        replaced_after = time.monotonic() - crossed_at
        load.wait_for_requests(50)  # the pool still serves, with the replacement
        result = load.stop()
    assert result.failures == [], result.failures[:10]
    print(f"replaced {replaced_after:.1f} s after crossing")
    assert replaced_after < 10
    log = master.log()
    assert f"Worker (pid:{leaking_pid}) uses" in log and "over the limit of 150.0 MiB" in log
    counted = restarts(sock)
    assert counted["memory"] == 1 and counted["exit"] == 0
    assert set(counted) >= {"exit", "timeout", "request_timeout", "max_requests", "reload", "scale", "memory",
                            "refork"}


def _sleepers(port: int, clients: int, stop: threading.Event, failures: list[str], served: list[int]) -> list[
        threading.Thread]:
    """Clients looping on a 0.5 s request, a fresh connection each (see docs/guards.md: a
    keep-alive connection stays with the worker that accepted it, whatever the pool's size)."""
    def client() -> None:
        deadline = time.monotonic() + 60  # stops by itself whatever happens to the test
        while not stop.is_set() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/sleep?s=0.5", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    served.append(1)
                else:
                    failures.append(f"HTTP {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def test_a_saturated_sync_pool_grows_to_max_workers_and_shrinks_back_after_the_load(arbiter, tmp_path):
    sock = tmp_path / "control.sock"
    master = arbiter(["guards_app:app", "-k", "sync", "-w", "1", "--max-workers", "4", "--scale-down-idle", "3",
                      "--control-socket", str(sock)])
    master.wait_ready(1)
    stop, failures, served = threading.Event(), [], []
    threads = _sleepers(master.port, 8, stop, failures, served)
    try:
        started = time.monotonic()
        master.wait_workers(lambda w: len(w) == 4, timeout=5, what="4 workers")
        grown_in = time.monotonic() - started
        # Busy, and at the ceiling: no fifth worker however long the load lasts.
        wait_until(lambda: len(served) >= 24, timeout=10, what="requests served by the grown pool")
        busy = metrics(sock)["arbiter_workers_busy_ratio"][0][1]
        assert len(master.workers()) == 4
    finally:
        stop.set()
        for thread in threads:
            thread.join(35)
    stopped = time.monotonic()
    master.wait_workers(lambda w: len(w) == 1, timeout=10, what="back to 1 worker")
    shrunk_in = time.monotonic() - stopped
    assert failures == [], failures[:10]
    print(f"grown in {grown_in:.1f} s, shrunk in {shrunk_in:.1f} s, busy {busy}")
    assert grown_in < 5 and shrunk_in < 10
    assert busy > 0.5
    log = master.log()
    assert log.count("Autoscale:") >= 6  # three up, three down, each logged with its cause
    assert "3 -> 4 workers (max 4)" in log and "2 -> 1 workers (min 1)" in log
    assert restarts(sock)["scale"] == 3


def test_a_program_over_its_memory_limit_is_restarted_through_its_stop_and_its_neighbour_is_not(arbiter, tmp_path):
    hog = Path(__file__).resolve().parent / "apps" / "memory_hog.py"
    config = tmp_path / "arbiter.toml"
    # Both have the same limit; only the hog's tree is over it, and only because of its child.
    config.write_text(f'''
        [programs.hog]
        command = ["{sys.executable}", "{hog}", "120"]
        memory_limit = "100MB"
        stopsignal = "USR1"
        stopwaitsecs = 5
        startsecs = 0
        stdout_logfile = "{tmp_path}/hog.log"

        [programs.neighbour]
        command = ["{sys.executable}", "{hog}", "10"]
        memory_limit = 100
        startsecs = 0
        stdout_logfile = "{tmp_path}/neighbour.log"
    '''.replace("\n        ", "\n"))
    master = arbiter(["-c", str(config)], bind=False)
    first = int(master.wait_log(r"spawned: 'hog' with pid (\d+)")[0].group(1))
    neighbour = int(master.wait_log(r"spawned: 'neighbour' with pid (\d+)")[0].group(1))
    restarted = master.wait_log(r"Program hog \(pid:(\d+)\) with its children uses ([\d.]+) MiB \(USS\), over "
                                r"the limit of 100\.0 MiB for 3 samples: restarting it", timeout=20)[0]
    assert int(restarted.group(1)) == first and float(restarted.group(2)) > 120
    second = int(master.wait_log(r"spawned: 'hog' with pid (\d+)", count=2)[1].group(1))
    assert second != first
    # Its normal stop: the stopsignal reached it, and it exited by itself.
    wait_until(lambda: f"parent {first} got SIGUSR1" in (tmp_path / "hog.log").read_text(), timeout=5)
    assert "stopped: hog (exit status 0)" in master.log()
    assert psutil.pid_exists(neighbour) and "neighbour (pid" not in master.log()
    assert master.log().count("spawned: 'neighbour'") == 1


def _status(sock: Path) -> dict:
    conn = UnixHTTPConnection(str(sock))
    try:
        conn.request("GET", "/v1/status")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


@pytest.mark.parametrize(("args", "capacity"), [
    (["wsgi_app:app", "-k", "sync"], 1),
    (["wsgi_app:app", "-k", "gthread", "--threads", "4"], 4),
    (["asgi_app:app", "-k", "uvicorn", "--worker-connections", "8"], 8),
    (["gevent_app:app", "-k", "gevent", "--worker-connections", "8"], 8),
])
def test_each_worker_class_reports_its_requests_in_progress_and_the_busy_ratio_follows(arbiter, tmp_path, args,
                                                                                      capacity):
    sock = tmp_path / "control.sock"
    master = arbiter([*args, "-w", "1", "--control-socket", str(sock)])
    master.wait_ready(1)
    slow = min(capacity, 2)  # requests held open at once: the worker's whole capacity for sync
    stop = threading.Event()
    failures: list[str] = []

    def client() -> None:
        while not stop.is_set():
            try:
                status, _ = http_get(master.port, "/sleep?s=0.5", timeout=10)
                if status != 200:
                    failures.append(f"HTTP {status}")
            except OSError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(slow)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: _status(sock)["workers"][0]["in_progress"] == slow, timeout=10,
                   what=f"{slow} requests in progress")
        expected = slow / capacity
        wait_until(lambda: abs(metrics(sock)["arbiter_workers_busy_ratio"][0][1] - expected) < 0.15, timeout=10,
                   what=f"a busy ratio near {expected}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    wait_until(lambda: _status(sock)["workers"][0]["in_progress"] == 0, timeout=10, what="no request in progress")
    assert failures == []


def test_ctl_scale_moves_the_floor_that_autoscaling_shrinks_to(arbiter, tmp_path):
    sock = tmp_path / "control.sock"
    master = arbiter(["guards_app:app", "-k", "sync", "-w", "1", "--max-workers", "3", "--scale-down-idle", "1",
                      "--control-socket", str(sock)])
    master.wait_ready(1)
    assert run_arbiter(["ctl", "-s", str(sock), "scale", "=2"]).returncode == 0
    master.wait_workers(lambda w: len(w) == 2, timeout=10, what="2 workers")
    stop, failures, served = threading.Event(), [], []
    threads = _sleepers(master.port, 6, stop, failures, served)
    try:
        master.wait_workers(lambda w: len(w) == 3, timeout=10, what="3 workers (the maximum)")
    finally:
        stop.set()
        for thread in threads:
            thread.join(35)
    # Quiet again: one worker goes, down to the floor `ctl scale` set, and the log says which.
    master.wait_log(r"Autoscale: busy ratio [\d.]+ < 0\.5 for \d+ s; 3 -> 2 workers \(min 2\)", timeout=15)
    master.wait_workers(lambda w: len(w) == 2, timeout=10, what="back to 2 workers")
    assert "2 -> 1 workers" not in master.log()
    assert failures == [], failures[:10]


def test_max_workers_below_workers_is_refused_at_start_naming_both():
    result = run_arbiter(["guards_app:app", "-w", "4", "--max-workers", "2", "-b", "127.0.0.1:0"])
    assert result.returncode != 0
    assert "max_workers (2) must be 0 (off) or at least workers (4)" in result.stderr
    assert "--max-workers" in result.stderr  # where it came from
