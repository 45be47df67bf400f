"""Reforking end to end, with real masters, real forks, real HTTP and real signals.

The app (tests/apps/lazy_table_app.py) builds a 40 MB table of bytes objects on its first
request, as a real app builds its caches lazily: each worker forked from the master pays for its
own copy, each worker forked by the mold shares the mold's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import APPS, Arbiter, run_arbiter, wait_until
from load import Load

APP = "lazy_table_app:app"
CONF = str(APPS / "refork_conf.py")


def children(master: Arbiter, title: str) -> list[int]:
    """Live children of the master whose title starts with `arbiter: <title>`."""
    pids = []
    try:
        kids = psutil.Process(master.pid).children()
    except psutil.NoSuchProcess:
        return []
    for child in kids:
        try:
            cmd = child.cmdline()[:1]
            if child.status() != psutil.STATUS_ZOMBIE and cmd and cmd[0].startswith(f"arbiter: {title}"):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return sorted(pids)


def status(master: Arbiter, sock: Path) -> dict[str, Any]:
    result = run_arbiter(["ctl", "-s", str(sock), "--json", "status"])
    assert result.returncode == 0, result.stderr + result.stdout
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        match = re.search(r"^Pss:\s+(\d+) kB", handle.read(), re.M)
    assert match, pid
    return int(match.group(1))


def serve_everyone(master: Arbiter, workers: int) -> set[int]:
    """Fresh connections until every worker has answered (each then holds the warm table)."""
    seen: set[int] = set()

    def spread() -> bool:
        for _ in range(40):
            status_code, body = master.get("/")
            assert status_code == 200, body
            seen.add(int(body.split()[0].split(b"=")[1]))
        return set(master.workers()) <= seen

    wait_until(spread, timeout=60, interval=0, what=f"every one of {workers} workers serving")
    return seen


def wait_reforked(master: Arbiter, workers: int, timeout: float = 60.0) -> tuple[int, list[int]]:
    """Wait until a mold runs and every serving worker was forked by it; (mold, workers).
    Requests keep coming meanwhile: promotion waits on a worker's request count."""
    def done() -> tuple[int, list[int]] | None:
        for _ in range(5):
            assert master.get("/")[0] == 200
        molds = children(master, "mold")
        pids = master.workers()
        if len(molds) != 1 or len(pids) != workers:
            return None
        pattern = rf"Booting worker with pid: (\d+) \(forked by the mold, pid {molds[0]}\)"
        by_mold = {int(p) for p in re.findall(pattern, master.log())}
        return (molds[0], pids) if set(pids) <= by_mold else None

    result: tuple[int, list[int]] = wait_until(done, timeout, what="every worker forked by the mold")
    return result


def test_reforked_workers_share_the_lazy_table(arbiter, tmp_path: Path) -> None:
    """The proof the issue asks for: 4 workers, --refork-after 20, total PSS (mold included) at
    most half of --preload alone, both measured in this run from /proc/PID/smaps_rollup."""
    preload = arbiter([APP, "-w", "4", "--preload"])
    refork = arbiter([APP, "-w", "4", "--preload", "--refork-after", "20"])
    preload.wait_ready(4)
    refork.wait_ready(4)
    serve_everyone(preload, 4)
    serve_everyone(refork, 4)  # past 20 requests a worker is promoted
    mold, pids = wait_reforked(refork, 4)
    serve_everyone(refork, 4)  # the new workers serve too (they built nothing: the table is the mold's)
    preload_pss = {pid: pss_kb(pid) for pid in preload.workers()}
    refork_pss = {pid: pss_kb(pid) for pid in [mold, *refork.workers()]}
    total_preload, total_refork = sum(preload_pss.values()), sum(refork_pss.values())
    print(f"\n--preload: workers PSS {preload_pss} total {total_preload / 1024:.1f} MiB")
    print(f"--preload --refork-after 20: mold {mold} + workers PSS {refork_pss} total {total_refork / 1024:.1f} MiB")
    print(f"ratio {total_refork / total_preload:.2f}")
    assert len(preload_pss) == 4 and len(refork_pss) == 5
    assert total_refork <= 0.5 * total_preload, (total_refork, total_preload)


def test_hooks_run_where_documented(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "-c", CONF, "--refork-after", "10"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    log = master.log()
    assert f"on_refork in pid {mold}" in log
    for pid in pids:
        assert f"post_fork in pid {pid}" in log
    # on_refork's effect is in the mold's memory, so every worker it forks sees it.
    assert all(b"reforks=1" in master.get("/")[1] for _ in range(6))


@pytest.mark.parametrize("app,kind", [(APP, "sync"), (APP, "gthread"), ("lazy_asgi_app:app", "uvicorn")])
def test_keepalive_load_through_promotion_fails_no_request(arbiter, app: str, kind: str) -> None:
    master = arbiter([app, "-k", kind, "-w", "3", "--refork-after", "30", "--keep-alive", "2"])
    master.wait_ready(3)
    with Load(master.port, keepalive=4, fresh=2, slow=1, max_seconds=90) as load:
        mold, pids = wait_reforked(master, 3, timeout=80)
        load.wait_for_requests(100)
        result = load.stop()
    assert not result.failures, result.failures[:10]
    assert set(pids) & result.pids, "the mold-forked workers served the load"
    after = [int(b.split()[0].split(b"=")[1]) for b in (master.get("/")[1] for _ in range(10))]
    assert mold not in after


def test_sigkill_of_the_mold_is_survived_and_a_worker_promoted_again(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "--refork-after", "20"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, _ = wait_reforked(master, 2)
    os.kill(mold, signal.SIGKILL)
    master.wait_log(rf"The mold \(pid:{mold}\) died")
    for _ in range(20):
        assert master.get("/")[0] == 200  # nothing stopped serving
    # Forking falls back to the master; the threshold applies again and a worker is promoted.
    serve_everyone(master, 2)
    new_mold = wait_until(lambda: [p for p in children(master, "mold") if p != mold], timeout=30,
                          what="a new mold")[0]
    assert new_mold != mold
    master.wait_log("Promoting worker", count=2)


def test_ctl_refork_promotes_now_and_status_shows_the_mold(arbiter, tmp_path: Path) -> None:
    sock = tmp_path / "control-0.sock"
    master = arbiter([APP, "-w", "2"])  # reforking off: only asked for
    master.wait_ready(2)
    serve_everyone(master, 2)
    result = run_arbiter(["ctl", "-s", str(sock), "refork"])
    assert result.returncode == 0, result.stdout + result.stderr
    mold, pids = wait_reforked(master, 2)
    rows = {row["pid"]: row for row in status(master, sock)["workers"]}
    assert rows[mold]["role"] == "mold" and rows[mold]["state"] == "MOLD"
    for pid in pids:
        assert rows[pid]["forked_from"] == mold and rows[pid]["role"] == "worker"
    table = run_arbiter(["ctl", "-s", str(sock), "status"]).stdout
    assert f"mold {mold}" in table


def test_gthread_workers_refork(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "-k", "gthread", "--threads", "4", "--refork-after", "15"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    assert psutil.Process(mold).num_threads() == 1  # the pool's threads were stopped first
    assert all(master.get("/")[0] == 200 for _ in range(10))


def test_sync_workers_with_request_deadlines_refork(arbiter) -> None:
    """--request-timeout's watchdog thread in a sync worker stops as the worker is promoted (a
    mold must hold one thread), and every worker forked by the mold watches its own."""
    master = arbiter([APP, "-w", "2", "-k", "sync", "--request-timeout", "30", "--refork-after", "15"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    assert psutil.Process(mold).num_threads() == 1
    assert all(psutil.Process(pid).num_threads() == 2 for pid in pids)  # main + its watchdog
    assert "cannot become the mold" not in master.log()
    assert all(master.get("/")[0] == 200 for _ in range(10))


def test_an_app_thread_that_cannot_stop_turns_reforking_off(arbiter, tmp_path: Path) -> None:
    sock = tmp_path / "control-0.sock"
    master = arbiter([APP, "-w", "1"])
    master.wait_ready(1)
    assert master.get("/threads")[0] == 200
    assert run_arbiter(["ctl", "-s", str(sock), "refork"]).returncode == 0
    master.wait_log("cannot become the mold: threads still running after on_refork: app-sleeper")
    master.wait_log("Reforking off until the next reload")
    master.wait_ready(1)
    assert master.get("/")[0] == 200
    assert not children(master, "mold")


def test_gevent_is_refused_with_a_message() -> None:
    result = run_arbiter([APP, "-k", "gevent", "--refork-after", "50"])
    assert result.returncode != 0
    assert "reforking does not work with gevent workers" in result.stderr + result.stdout


def test_hup_starts_from_the_master_then_reforks(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "--refork-after", "20"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, _ = wait_reforked(master, 2)
    master.signal(signal.SIGHUP)
    master.wait_log(rf"Mold \(pid:{mold}\) stopped")
    master.wait_log("Reload done")
    serve_everyone(master, 2)
    new_mold, _ = wait_reforked(master, 2)
    assert new_mold != mold
    master.wait_log("Promoting worker", count=2)


def test_max_requests_recycles_from_the_mold(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "--refork-after", "10", "--max-requests", "25"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, first = wait_reforked(master, 2)
    for _ in range(120):
        assert master.get("/")[0] == 200
    recycled = wait_until(lambda: (lambda pids: pids if len(pids) == 2 and not set(pids) & set(first) else None)(
        master.workers()), timeout=30, what="recycled workers")
    for pid in recycled:
        assert psutil.Process(pid).ppid() == master.pid
    assert master.log().count("forked by the mold") >= 4
    assert children(master, "mold") == [mold]


def test_a_hung_mold_is_killed_on_timeout_and_forking_falls_back(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "--refork-after", "10", "-t", "2"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, _ = wait_reforked(master, 2)
    os.kill(mold, signal.SIGSTOP)  # silent: no heartbeat
    master.wait_log(rf"WORKER TIMEOUT \(pid:{mold}\)")
    master.wait_log(rf"The mold \(pid:{mold}\) died")
    master.signal(signal.SIGTTIN)  # a new worker now comes from the master
    master.wait_workers(lambda w: len(w) == 3)
    assert master.get("/")[0] == 200


def test_workers_forked_by_the_mold_leave_when_the_master_is_killed(arbiter) -> None:
    """Their parent-death signal is armed once their parent is the master."""
    master = arbiter([APP, "-w", "2", "--refork-after", "10"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    procs = [psutil.Process(pid) for pid in [mold, *pids]]
    os.kill(master.pid, signal.SIGKILL)
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, alive


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_stop_with_a_mold_leaves_nothing(arbiter, sig: int) -> None:
    master = arbiter([APP, "-w", "2", "--refork-after", "10"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    master.signal(sig)
    assert master.wait_exit(30) == 0
    for pid in [mold, *pids]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_uvicorn_workers_refork_and_run_lifespan_startup_themselves(arbiter) -> None:
    master = arbiter(["lazy_asgi_app:app", "-w", "2", "-k", "uvicorn", "--refork-after", "15"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    assert psutil.Process(mold).num_threads() == 1
    answers = {}
    for _ in range(30):
        status_code, body = master.get("/")
        assert status_code == 200
        fields = dict(item.split("=") for item in body.decode().split())
        answers[int(fields["pid"])] = fields
    assert set(answers) <= set(pids) and answers
    for pid, fields in answers.items():
        assert int(fields["startup"]) == pid  # the lifespan startup ran in the worker itself
        assert int(fields["built_by"]) == mold  # the lazy table came from the mold, not rebuilt
        assert fields["loop_ok"] == "1"  # what startup bound to a loop is this worker's loop


def test_the_subreaper_master_reaps_orphans_of_programs_without_mistaking_them(arbiter, tmp_path: Path) -> None:
    """A program that leaves orphans behind: once the master is a child subreaper (first
    promotion), they become its children; it reaps them and the program and workers go on."""
    path = tmp_path / "arbiter.toml"
    path.write_text(textwrap.dedent(f'''
        wsgi_app = "{APP}"
        workers = 2
        refork_after = [10]
        loglevel = "debug"

        [programs.leaver]
        command = "sh -c 'while true; do (sleep 0.1 &); sleep 0.2; done'"
        startsecs = 0
    '''))
    master = arbiter(["-c", str(path)])
    master.wait_ready(2)
    program = int(master.wait_log(r"spawned: 'leaver' with pid (\d+)")[0].group(1))
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    master.wait_log(r"Reaped an orphaned process", count=3)
    orphan_parent = psutil.Process(master.pid)

    def no_zombies() -> bool:
        zombies = []
        for child in orphan_parent.children():
            try:
                zombies += [child.pid] if child.status() == psutil.STATUS_ZOMBIE else []
            except psutil.NoSuchProcess:
                pass
        return not zombies

    wait_until(no_zombies, timeout=5, what="no zombie children of the master")
    assert psutil.Process(program).is_running()
    assert master.log().count("spawned: 'leaver'") == 1  # the program was never taken for exited
    assert children(master, "mold") == [mold] and sorted(master.workers()) == sorted(pids)
    assert master.get("/")[0] == 200


@pytest.mark.parametrize("value", ["100,50", "0", "ten"])
def test_refork_after_must_be_growing_positive_counts(value: str) -> None:
    result = run_arbiter([APP, "--refork-after", value])
    assert result.returncode == 2, result.stderr
    assert "refork_after" in result.stderr and "50,100,1000" in result.stderr



def test_ctl_refork_is_refused_for_gevent_workers(arbiter, tmp_path: Path) -> None:
    pytest.importorskip("gevent")
    sock = tmp_path / "control-0.sock"
    master = arbiter([APP, "-w", "1", "-k", "gevent"])
    master.wait_ready(1)
    result = run_arbiter(["ctl", "-s", str(sock), "refork"])
    assert result.returncode != 0
    assert "reforking does not work with gevent workers" in result.stdout
    assert master.get("/")[0] == 200 and not children(master, "mold")


def test_usr2_stops_the_mold_and_the_new_image_reforks_again(arbiter) -> None:
    master = arbiter([APP, "-w", "2", "--refork-after", "10"])
    master.wait_ready(2)
    serve_everyone(master, 2)
    mold, pids = wait_reforked(master, 2)
    master.signal(signal.SIGUSR2)
    master.wait_log(r"Upgraded in place \(pid \d+\): adopted 2 workers")  # the mold is not handed over
    master.wait_log(r"Reload done")
    wait_until(lambda: not psutil.pid_exists(mold) or psutil.Process(mold).status() == psutil.STATUS_ZOMBIE,
               timeout=10, what="the old mold gone")
    serve_everyone(master, 2)
    new_mold, _ = wait_reforked(master, 2)
    assert new_mold != mold and master.proc.poll() is None
