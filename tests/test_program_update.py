"""A changed configuration applied at runtime (reread/update/add/remove), the log helpers and
`settled`: real programs, driven by a small loop that plays the master."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from arbiter.programs import Diff, ProgramConfig, errors
from arbiter.programs.states import Autorestart
from program_helpers import FakeClock, Master, master  # noqa: F401  (fixture)

PY = sys.executable
# Ignores SIGTERM, so that a stop lasts stopwaitsecs and ends with SIGKILL.
STUBBORN = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)")


def program(tmp: Path, name: str, command: str | tuple[str, ...], **kw: Any) -> ProgramConfig:
    kw.setdefault("stdout_logfile", str(tmp / f"{name}.log"))
    kw.setdefault("redirect_stderr", True)
    kw.setdefault("startsecs", 0.2)
    kw.setdefault("stopasgroup", True)  # so that no grandchild outlives a test
    kw.setdefault("killasgroup", True)
    return ProgramConfig(name=name, command=command, **kw)


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


# ---- reread -------------------------------------------------------------------------------


def test_diff_names_groups_added_changed_and_removed(master, tmp_path: Path) -> None:
    a = program(tmp_path, "a", ("sleep", "30"), origin="one.conf:1")
    b = program(tmp_path, "b", ("sleep", "30"))
    c = program(tmp_path, "c", ("sleep", "30"))
    gone = program(tmp_path, "gone", ("sleep", "30"))
    m = master(a, b, c, gone, groups={"g": ["c"]})
    extra = program(tmp_path, "extra", ("sleep", "30"))
    new = [replace(a, origin="two.conf:9"), replace(b, command=("sleep", "31")), c, extra]

    found = m.manager.diff(new, {"g": ["c"]})
    assert found == Diff(added=("extra",), changed=("b",), removed=("gone",))
    assert found.as_dict() == {"added": ["extra"], "changed": ["b"], "removed": ["gone"]}
    # By group name: b moving into g changes g and removes the group b.
    assert m.manager.diff([a, b, c, gone], {"g": ["c", "b"]}) == Diff(changed=("g",), removed=("b",))
    assert m.manager.diff([a, b, replace(c, numprocs=2, process_name="c%(process_num)d"), gone],
                          {"g": ["c"]}) == Diff(changed=("g",))
    assert m.manager.diff([a, b, c, gone], {"g": ["c"]}) == Diff()
    # Pure: nothing was added, removed or started.
    assert m.names() == ["a", "b", "g:c", "gone"]
    assert all(row["statename"] == "STOPPED" for row in m.manager.status())
    assert m.messages("^spawned: ") == []


# ---- update -------------------------------------------------------------------------------


def test_update_restarts_exactly_the_changed_processes(master, tmp_path: Path) -> None:
    a, b = program(tmp_path, "a", ("sleep", "30")), program(tmp_path, "b", ("sleep", "30"))
    c, d = program(tmp_path, "c", ("sleep", "30")), program(tmp_path, "d", ("sleep", "30"))
    groups = {"g": ["c", "d"]}
    m = master(a, b, c, d, groups=groups)
    m.manager.start_autostart()
    m.run_until(lambda: m.running("a", "b", "g:c", "g:d"))
    before = {name: m.pid(name) for name in m.names()}

    new_b = replace(b, command=sh("echo v2; exec sleep 30"))
    new_d = replace(d, stopsignal=signal.SIGINT)
    done = m.manager.update([a, new_b, c, new_d], groups)
    assert done == Diff(changed=("b", "g"))
    assert m.state("b") == m.state("g:d") == "STOPPING"
    m.run_until(lambda: m.running("b", "g:d") and m.pid("b") != before["b"] and m.pid("g:d") != before["g:d"])
    m.run_until(lambda: "v2" in (tmp_path / "b.log").read_text())
    assert m.pid("a") == before["a"] and m.pid("g:c") == before["g:c"]
    assert {before["b"], before["g:d"]} <= m.reaped
    assert "stopped: d (terminated by SIGTERM)" in m.messages()  # stopped with its old stopsignal
    assert m.manager.diff([a, new_b, c, new_d], groups) == Diff()


def test_update_applies_only_the_groups_named(master, tmp_path: Path) -> None:
    a, b = program(tmp_path, "a", ("sleep", "30")), program(tmp_path, "b", ("sleep", "30"))
    m = master(a, b)
    m.manager.start_autostart()
    m.run_until(lambda: m.running("a", "b"))
    before = {name: m.pid(name) for name in m.names()}
    new = [replace(a, command=("sleep", "31")), replace(b, command=("sleep", "31"))]
    with pytest.raises(errors.BadName):
        m.manager.update(new, {}, names=["nope"])
    assert m.manager.update(new, {}, names=["a"]) == Diff(changed=("a",))
    assert m.manager.diff(new, {}) == Diff(changed=("b",))
    m.run_until(lambda: m.running("a") and m.pid("a") != before["a"])
    assert m.pid("b") == before["b"]
    assert m.manager.diff(new, {}) == Diff(changed=("b",))


def test_a_fatal_program_starts_once_its_command_is_fixed(master, tmp_path: Path) -> None:
    broken = program(tmp_path, "job", sh("exit 1"), startretries=0)
    idle = program(tmp_path, "idle", sh("exit 1"), startretries=0, autostart=False)
    m = master(broken, idle)
    m.manager.start_autostart()
    m.run_until(lambda: m.state("job") == "FATAL")
    fixed = [replace(broken, command=("sleep", "30")), replace(idle, command=("sleep", "30"))]
    assert m.manager.update(fixed, {}) == Diff(changed=("idle", "job"))
    m.run_until(lambda: m.running("job"))
    assert m.state("idle") == "STOPPED"  # autostart=false, and it was not running: left stopped
    m.manager.start("idle")
    m.run_until(lambda: m.running("idle"))


def test_numprocs_grows_and_shrinks_in_place(master, tmp_path: Path) -> None:
    pool = program(tmp_path, "pool", ("sleep", "30"), numprocs=2, process_name="w%(process_num)d",
                   stdout_logfile=str(tmp_path / "w%(process_num)d.log"))
    m = master(pool)
    m.manager.start_autostart()
    m.run_until(lambda: m.running("pool:w0", "pool:w1"))
    first = [m.pid("pool:w0"), m.pid("pool:w1")]

    assert m.manager.update([replace(pool, numprocs=4)], {}) == Diff(changed=("pool",))
    m.run_until(lambda: m.running("pool:w0", "pool:w1", "pool:w2", "pool:w3"))
    assert [m.pid("pool:w0"), m.pid("pool:w1")] == first
    extra = [m.pid("pool:w2"), m.pid("pool:w3")]

    assert m.manager.update([pool], {}) == Diff(changed=("pool",))
    assert m.state("pool:w2") == m.state("pool:w3") == "STOPPING"  # shown until stopped
    with pytest.raises(errors.BadName):
        m.manager.start("pool:w3")  # but no longer selectable
    m.run_until(lambda: m.names() == ["pool:w0", "pool:w1"])
    assert [m.pid("pool:w0"), m.pid("pool:w1")] == first
    assert set(extra) <= m.reaped
    assert sorted(m.messages("^removed: ")) == ["removed: pool:w2", "removed: pool:w3"]


def test_removed_group_is_stopped_then_forgotten_and_can_come_back(master, tmp_path: Path) -> None:
    stubborn = program(tmp_path, "stubborn", (PY, "-c", STUBBORN), stopwaitsecs=1)
    other = program(tmp_path, "other", ("sleep", "30"))
    clock = FakeClock()
    m = master(stubborn, other, clock=clock)
    m.manager.start_autostart()
    m.run_until(lambda: m.running("stubborn", "other") and "ready" in (tmp_path / "stubborn.log").read_text(), jump=True)
    old, other_pid = m.pid("stubborn"), m.pid("other")

    assert m.manager.update([other], {}) == Diff(removed=("stubborn",))
    assert m.state("stubborn") == "STOPPING"
    assert m.manager.diff([other], {}) == Diff()  # already on its way out
    assert m.manager.settled(["stubborn"], "stopped") is None
    # Back in the configuration before it stopped: it takes over, never running beside it.
    assert m.manager.update([stubborn, other], {}) == Diff(added=("stubborn",))
    clock.advance(1)  # stopwaitsecs: SIGKILL, once
    m.run_until(lambda: m.state("stubborn") == "STARTING" and m.pid("stubborn") not in (0, old), timeout=5)
    clock.advance(0.2)  # startsecs
    m.run_until(lambda: m.state("stubborn") == "RUNNING" and m.pid("stubborn") != old, timeout=5)
    assert old in m.reaped
    assert m.messages("^killing 'stubborn'") == [f"killing 'stubborn' ({old}) with SIGKILL"]

    again = m.pid("stubborn")
    m.manager.update([other], {})
    m.run_until(lambda: m.names() == ["other"], timeout=5, jump=True)
    assert again in m.reaped and m.pid("other") == other_pid
    with pytest.raises(errors.BadName):
        m.manager.settled(["stubborn"], "stopped")


def test_a_group_of_the_same_name_with_other_programs_replaces_it_in_one_update(master, tmp_path: Path) -> None:
    old = program(tmp_path, "old", (PY, "-c", STUBBORN), process_name="worker", stopwaitsecs=0.5)
    m = master(old, groups={"svc": ["old"]}, clock=FakeClock())
    m.manager.start_autostart()
    m.run_until(lambda: m.running("svc:worker") and "ready" in (tmp_path / "old.log").read_text(), jump=True)
    first = m.pid("svc:worker")
    new = program(tmp_path, "new", ("sleep", "30"), process_name="worker")
    assert m.manager.update([new], {"svc": ["new"]}) == Diff(changed=("svc",))
    m.run_until(lambda: m.running("svc:worker") and m.pid("svc:worker") != first, timeout=5, jump=True)  # info(): one row
    assert first in m.reaped
    m.manager.stop("new")  # the program name now means the new program
    with pytest.raises(errors.BadName):
        m.manager.start("old")


def test_a_stop_during_an_update_wins_and_a_start_uses_the_new_command(master, tmp_path: Path) -> None:
    stubborn = program(tmp_path, "stubborn", (PY, "-c", STUBBORN), stopwaitsecs=1)
    m = master(stubborn, clock=FakeClock())
    m.manager.start_autostart()
    m.run_until(lambda: m.running("stubborn") and "ready" in (tmp_path / "stubborn.log").read_text(), jump=True)
    m.manager.update([replace(stubborn, command=sh("echo new; exec sleep 30"))], {})
    assert m.manager.settled(["stubborn"], "running") is None  # it restarts once stopped
    m.manager.stop("stubborn")  # the restart is called off
    assert m.manager.settled(["stubborn"], "running") is False
    m.run_until(lambda: m.manager.settled(["stubborn"], "stopped"), timeout=5, jump=True)
    m.turn()
    assert m.state("stubborn") == "STOPPED"
    m.manager.start("stubborn")
    m.run_until(lambda: m.running("stubborn") and "new" in (tmp_path / "stubborn.log").read_text(), jump=True)


# ---- add and remove -----------------------------------------------------------------------


def test_add_and_remove_group_and_their_faults(master, tmp_path: Path) -> None:
    a = program(tmp_path, "a", ("sleep", "30"))
    b = program(tmp_path, "b", ("sleep", "30"), autostart=False)
    m = master(a, b)
    m.manager.start_autostart()
    m.run_until(lambda: m.running("a"))

    with pytest.raises(errors.AlreadyAdded) as added:
        m.manager.add_group("a", [a, b], {})
    assert (added.value.code, added.value.fault) == (90, "ALREADY_ADDED")
    with pytest.raises(errors.BadName):
        m.manager.add_group("nope", [a, b], {})
    with pytest.raises(errors.StillRunning) as running:
        m.manager.remove_group("a")
    assert (running.value.code, running.value.fault) == (91, "STILL_RUNNING")
    with pytest.raises(errors.BadName):
        m.manager.remove_group("nope")

    m.manager.remove_group("b")  # stopped: forgotten at once
    assert m.names() == ["a"]
    m.manager.add_group("b", [a, b], {})
    assert m.state("b") == "STOPPED"  # autostart=false
    m.manager.stop("a")
    m.run_until(lambda: m.state("a") == "STOPPED")
    m.manager.remove_group("a")
    assert m.names() == ["b"]
    m.manager.add_group("a", [a, b], {})
    m.run_until(lambda: m.running("a"))


def test_depends_on_must_stay_met(master, tmp_path: Path) -> None:
    db = program(tmp_path, "db", ("sleep", "30"), autostart=False)
    web = program(tmp_path, "web", ("sleep", "30"), autostart=False, depends_on=("db",))
    m = master(db, web)
    with pytest.raises(errors.Failed, match="web depends_on db"):
        m.manager.remove_group("db")
    cache = program(tmp_path, "cache", ("sleep", "30"), autostart=False)
    new_web = replace(web, depends_on=("db", "cache"))
    with pytest.raises(errors.Failed, match="web depends_on cache"):
        m.manager.update([db, new_web, cache], {}, names=["web"])
    assert m.names() == ["db", "web"]  # nothing was changed
    assert m.manager.update([db, new_web, cache], {}) == Diff(added=("cache",), changed=("web",))
    m.manager.start("web")  # starts what it depends on first
    m.run_until(lambda: m.running("cache", "db", "web"))


# ---- logs ---------------------------------------------------------------------------------


def test_clear_log_truncates_while_the_child_keeps_writing(master, tmp_path: Path) -> None:
    script = "import itertools, time\nfor i in itertools.count(): print(i, flush=True); time.sleep(0.01)"
    chatty = program(tmp_path, "chatty", (PY, "-c", script))
    quiet = program(tmp_path, "quiet", ("sleep", "30"), stdout_logfile=None, redirect_stderr=False,
                    stderr_logfile="AUTO")
    m = master(chatty, quiet)
    log = tmp_path / "chatty.log"
    assert m.manager.log_path("chatty", "stdout") == str(log)
    assert m.manager.log_path("chatty", "stderr") is None  # redirected to stdout
    assert m.manager.log_path("quiet", "stdout") is None
    auto = m.manager.log_path("quiet", "stderr")
    assert auto is not None and os.path.dirname(auto) == str(tmp_path)
    with pytest.raises(ValueError):
        m.manager.log_path("chatty", "stdin")
    m.manager.start_autostart()
    m.run_until(lambda: log.read_text().count("\n") >= 30)
    pid = m.pid("chatty")

    m.manager.clear_log("chatty")
    assert log.stat().st_size == 0
    m.run_until(lambda: log.read_text().count("\n") >= 10)
    text = log.read_text()
    assert "\0" not in text  # written from the start, not at the old offset
    numbers = [int(line) for line in text.splitlines()[1:]]  # the first may be a line's tail
    assert numbers[0] >= 30 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert m.pid("chatty") == pid and m.state("chatty") == "RUNNING"
    m.manager.clear_log("quiet", "stdout")  # nothing kept: nothing to clear


# ---- settled ------------------------------------------------------------------------------


def test_settled_for_running_stopped_and_failed(master, tmp_path: Path) -> None:
    db = program(tmp_path, "db", ("sleep", "30"), startsecs=0.3)
    web = program(tmp_path, "web", ("sleep", "30"), depends_on=("db",))
    bad = program(tmp_path, "bad", sh("exit 1"), startsecs=0.3, startretries=1)
    once = program(tmp_path, "once", sh("exit 0"), startsecs=0, autorestart=Autorestart.NEVER)
    m = master(db, web, bad, once)
    m.manager.start_autostart()
    assert m.state("web") == "STOPPED"
    assert m.manager.settled(["web", "db"], "running") is None  # web waits for db
    m.run_until(lambda: m.manager.settled(["web", "db"], "running"))
    m.run_until(lambda: m.manager.settled(["bad"], "running") is False)
    assert m.state("bad") == "FATAL"
    assert m.manager.settled(["web", "bad"], "running") is False
    m.run_until(lambda: m.state("once") == "EXITED")
    assert m.manager.settled(["once"], "running") is False
    assert m.manager.settled(["once", "bad"], "stopped") is True

    m.manager.stop("web")
    assert m.manager.settled(["web"], "stopped") is None
    m.run_until(lambda: m.manager.settled(["web"], "stopped"))
    m.manager.restart("db")
    assert m.manager.settled(["db"], "running") is None
    m.run_until(lambda: m.manager.settled(["db"], "running"))
    with pytest.raises(ValueError):
        m.manager.settled(["db"], "sideways")
    with pytest.raises(errors.BadName):
        m.manager.settled(["nope"], "running")
