"""ProgramManager end to end: real programs, driven by a small loop that plays the master."""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from arbiter.programs import ProgramConfig, load_supervisor_ini
from arbiter.programs import errors
from arbiter.programs.states import Autorestart
from program_helpers import FakeClock, Master, master  # noqa: F401  (fixture)

PY = sys.executable


def program(tmp: Path, name: str, command: str | tuple[str, ...], **kw: Any) -> ProgramConfig:
    kw.setdefault("stdout_logfile", str(tmp / f"{name}.log"))
    kw.setdefault("redirect_stderr", True)
    kw.setdefault("startsecs", 0.2)
    # Signal the whole group, so that no `sh -c` grandchild outlives a test.
    kw.setdefault("stopasgroup", True)
    kw.setdefault("killasgroup", kw["stopasgroup"])
    return ProgramConfig(name=name, command=command, **kw)


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


# ---- the Supervisor fixtures, run ---------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "supervisor"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_supervisor_fixture_runs(master, tmp_path: Path, name: str) -> None:
    here = tmp_path / "supervisor"
    shutil.copytree(FIXTURES, here, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(here):
        os.chmod(folder, 0o755)  # the shared copy is read-only; logs go to run/
    result = load_supervisor_ini(str(here / name))
    expected = EXPECTED[name]
    # A fake clock, moved on whenever the loop is idle: startsecs (2 s in options.conf) passes
    # at once; these programs only run, so no timer races a real exit.
    m = master(*result.programs, groups=result.groups, clock=FakeClock())
    m.manager.start_autostart()
    m.run_until(lambda: all(m.state(n) == "RUNNING" for n in expected["running"]), timeout=15, jump=True)
    assert all(m.state(n) == "STOPPED" for n in expected.get("stopped", []))
    for log, needles in expected.get("log_contains", {}).items():
        m.run_until(lambda: all(n in (here / log).read_text() for n in needles))


# ---- the state machine, for real ----------------------------------------------------------


def test_crash_loop_backs_off_longer_each_time_then_fatal(master, tmp_path: Path) -> None:
    clock = FakeClock()
    m = master(program(tmp_path, "crash", sh("exit 1"), startsecs=1, startretries=2), clock=clock)
    m.manager.start_autostart()
    for attempt, delay in enumerate((1.0, 2.0), start=1):
        m.run_until(lambda: m.state("crash") == "BACKOFF" and m.info("crash")["pid"] == 0)
        assert len(m.messages("^spawned: 'crash'")) == attempt
        clock.advance(delay - 0.001)
        m.turn(0)
        assert m.state("crash") == "BACKOFF"  # not a millisecond early
        clock.advance(0.001)
        m.turn(0)
        assert m.state("crash") == "STARTING"
    m.run_until(lambda: m.state("crash") == "FATAL")
    spawns = m.times("^spawned: 'crash'")
    gaps = [b - a for a, b in zip(spawns, spawns[1:])]
    assert len(spawns) == 3, m.messages()
    assert gaps == pytest.approx([1.0, 2.0])
    assert m.messages("^gave up: ") == ["gave up: crash entered FATAL state, too many start retries too quickly"]
    assert m.messages("^exited: ") == ["exited: crash (exit status 1; not expected)"] * 3
    assert m.info("crash")["description"] == "Exited too quickly (process log may have details)"


def test_startsecs_is_counted_on_the_managers_clock(master, tmp_path: Path) -> None:
    clock = FakeClock()
    m = master(program(tmp_path, "slow", ("sleep", "30"), startsecs=5), clock=clock)
    m.manager.start_autostart()
    m.run_until(lambda: m.info("slow")["pid"] != 0)
    clock.advance(4.999)
    m.turn(0)
    assert m.state("slow") == "STARTING"
    clock.advance(0.001)
    m.turn(0)
    assert m.state("slow") == "RUNNING"
    assert m.messages("^success: ") == [
        "success: slow entered RUNNING state, process has stayed up for > than 5 seconds (startsecs)"]
    clock.advance(3600)
    assert m.info("slow")["uptime"] == pytest.approx(3605)


def test_autorestart_unexpected_follows_exitcodes(master, tmp_path: Path) -> None:
    fine = program(tmp_path, "fine", sh("sleep 0.3; exit 2"), startsecs=0.1, exitcodes=(0, 2))
    bad = program(tmp_path, "bad", sh("sleep 0.3; exit 3"), startsecs=0.1, exitcodes=(0, 2))
    m = master(fine, bad)
    m.manager.start_autostart()
    m.run_until(lambda: len(m.messages("^spawned: 'bad'")) >= 2)
    m.run_until(lambda: m.state("fine") == "EXITED")
    assert len(m.messages("^spawned: 'fine'")) == 1
    assert m.info("fine")["exitstatus"] == 2
    assert "exited: fine (exit status 2; expected)" in m.messages()
    assert "exited: bad (exit status 3; not expected)" in m.messages()


def test_term_ignoring_child_is_killed_after_stopwaitsecs(master, tmp_path: Path) -> None:
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)"
    clock = FakeClock()
    m = master(program(tmp_path, "stubborn", (PY, "-c", script), stopwaitsecs=1), clock=clock)
    m.manager.start_autostart()
    m.run_until(lambda: "ready" in (tmp_path / "stubborn.log").read_text())
    asked = clock()
    m.manager.stop("stubborn")
    assert m.state("stubborn") == "STOPPING"
    clock.advance(0.999)
    m.turn(0)
    assert m.messages("^killing 'stubborn'") == []
    clock.advance(0.001)
    m.run_until(lambda: m.state("stubborn") == "STOPPED", timeout=5)
    (killed_at,) = m.times("^killing 'stubborn'")
    assert killed_at - asked == pytest.approx(1.0)
    assert m.messages("^stopped: ") == ["stopped: stubborn (terminated by SIGKILL)"]
    assert "waiting for stubborn to stop" in m.messages()


def test_a_program_started_while_signals_are_blocked_still_gets_them(master, tmp_path: Path) -> None:
    m = master(program(tmp_path, "calm", ("sleep", "30"), stopwaitsecs=5))
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGCHLD})
    try:
        m.manager.start_autostart()  # as a master that blocks signals around its forks might
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    m.run_until(lambda: m.state("calm") == "RUNNING")
    m.manager.stop("calm")
    m.run_until(lambda: m.state("calm") == "STOPPED", timeout=3)
    assert m.messages("^stopped: ") == ["stopped: calm (terminated by SIGTERM)"]


def test_stopasgroup_leaves_no_process_behind(master, tmp_path: Path) -> None:
    m = master(program(tmp_path, "family", sh("sleep 999 & sleep 999"), stopasgroup=True))
    m.manager.start_autostart()
    m.run_until(lambda: m.state("family") == "RUNNING")
    leader = m.info("family")["pid"]
    family: list[psutil.Process] = []

    def grown() -> bool:
        family[:] = [p for p in psutil.process_iter() if _pgid(p.pid) == leader]
        return len([p for p in family if p.name() == "sleep"]) == 2

    try:
        m.run_until(grown)
        m.manager.stop("family")
        m.run_until(lambda: m.state("family") == "STOPPED")
        m.run_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family), timeout=5)
    finally:
        for proc in family:  # psutil will not signal a pid that was reused since
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_numprocs_names_and_supervisor_environment(master, tmp_path: Path) -> None:
    pool = program(tmp_path, "pool", sh("echo $SUPERVISOR_ENABLED $SUPERVISOR_GROUP_NAME $SUPERVISOR_PROCESS_NAME; sleep 30"),
                   numprocs=3, numprocs_start=1, process_name="%(program_name)s_%(process_num)02d",
                   stdout_logfile=str(tmp_path / "pool_%(process_num)02d.log"))
    m = master(pool, groups={"backend": ["pool"]})
    m.manager.start_autostart()
    names = ["backend:pool_01", "backend:pool_02", "backend:pool_03"]
    m.run_until(lambda: all(m.state(n) == "RUNNING" for n in names))
    assert [row["fullname"] for row in m.manager.status()] == names
    assert (tmp_path / "pool_02.log").read_text() == "1 backend pool_02\n"
    m.manager.stop("backend:*")
    m.run_until(m.manager.all_stopped)
    m.manager.start("pool")  # a program name means all its processes
    assert all(m.state(n) == "STARTING" for n in names)
    with pytest.raises(errors.BadName):
        m.manager.start("backend:nope")
    with pytest.raises(errors.AlreadyStarted):
        m.manager.start("backend:pool_01")


def test_depends_on_starts_after_and_stops_before(master, tmp_path: Path) -> None:
    db = program(tmp_path, "db", sh("sleep 30"), startsecs=0.5, priority=500)
    web = program(tmp_path, "web", sh("sleep 30"), depends_on=("db",), priority=1)
    m = master(web, db)
    m.manager.start_autostart()
    assert m.state("web") == "STOPPED" and m.state("db") == "STARTING"
    m.run_until(lambda: m.state("web") == "RUNNING")
    (db_running,) = m.times("^success: db ")
    (web_spawned,) = m.times("^spawned: 'web'")
    assert web_spawned >= db_running
    m.manager.stop_all()
    m.run_until(m.manager.all_stopped)
    stopped = m.messages("^stopped: ")
    assert [s.split()[1] for s in stopped] == ["web", "db"]  # though db's priority is higher


def test_missing_command_backs_off_then_fatal(master, tmp_path: Path) -> None:
    m = master(program(tmp_path, "ghost", ("no-such-command-here", "--x"), startretries=1, autostart=False))
    with pytest.raises(errors.SpawnError, match="can't find command 'no-such-command-here'"):
        m.manager.start("ghost")
    assert m.state("ghost") == "BACKOFF"
    m.run_until(lambda: m.state("ghost") == "FATAL", timeout=5)
    assert m.messages("^spawnerr: ") == ["spawnerr: can't find command 'no-such-command-here'"] * 2
    assert m.info("ghost")["description"] == "can't find command 'no-such-command-here'"
    assert m.spawned_pids() == []


def test_not_executable_is_named(master, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    m = master(program(tmp_path, "noexec", str(script), startretries=0, autostart=False))
    with pytest.raises(errors.SpawnError, match="is not executable"):
        m.manager.start("noexec")
    assert m.state("noexec") == "FATAL"


def test_relative_command_runs_in_its_directory(master, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.sh").write_text("#!/bin/sh\necho hello from $(pwd)\n")
    (work / "hello.sh").chmod(0o755)
    m = master(program(tmp_path, "rel", "./hello.sh", directory=str(work), startsecs=0,
                       autorestart=Autorestart.NEVER))
    m.manager.start_autostart()
    m.run_until(lambda: m.state("rel") == "EXITED")
    assert (tmp_path / "rel.log").read_text() == f"hello from {work}\n"


def test_restart_signal_and_faults(master, tmp_path: Path) -> None:
    trap = "trap 'echo got-hup' HUP; echo up; while :; do sleep 0.05; done"
    m = master(program(tmp_path, "svc", sh(trap), startsecs=0.1))
    m.manager.start_autostart()
    m.run_until(lambda: m.state("svc") == "RUNNING" and "up" in (tmp_path / "svc.log").read_text())
    m.manager.signal("svc", "HUP")
    m.run_until(lambda: "got-hup" in (tmp_path / "svc.log").read_text())
    first = m.info("svc")["pid"]
    m.manager.restart("svc")
    m.run_until(lambda: m.state("svc") == "RUNNING" and m.info("svc")["pid"] != first)
    with pytest.raises(errors.BadSignal):
        m.manager.signal("svc", "NOPE")
    m.manager.stop("svc")
    with pytest.raises(errors.NotRunning):
        m.manager.stop("svc")
    m.run_until(m.manager.all_stopped)
    m.manager.stop_all()
    with pytest.raises(errors.ShutdownState):
        m.manager.start("svc")


def test_user_umask_directory_and_environment(master, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.getuid() != 0:
        pytest.skip("dropping to another user needs root")
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("FROM_MASTER", "yes")
    monkeypatch.setenv("LISTEN_FDS", "3")  # the master's own sockets are not the child's
    work = tmp_path / "work"
    work.mkdir()
    script = "id -u; id -g; id -G; umask; pwd; echo $HOME $USER $FROM_MASTER ${LISTEN_FDS:-none} $OWN"
    m = master(program(tmp_path, "who", sh(script), user="nobody", umask=0o027, directory=str(work),
                       environment={"OWN": "mine"}, startsecs=0, autorestart=Autorestart.NEVER))
    m.manager.start_autostart()
    m.run_until(lambda: m.state("who") == "EXITED")
    uid, gid, groups, umask, cwd, env = (tmp_path / "who.log").read_text().splitlines()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert sorted(map(int, groups.split())) == sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    assert (umask, cwd) == ("0027", str(work))
    assert env == f"{nobody.pw_dir} nobody yes none mine"


def test_a_program_inherits_the_masters_umask_unless_it_sets_its_own(master, tmp_path: Path) -> None:
    touch = "import os, sys; open(sys.argv[1], 'w').close()"
    inherit = program(tmp_path, "inherit", (PY, "-c", touch, str(tmp_path / "inherited")), startsecs=0,
                      autorestart=Autorestart.NEVER)
    own = program(tmp_path, "own", (PY, "-c", touch, str(tmp_path / "own")), startsecs=0,
                  autorestart=Autorestart.NEVER, umask=0o077)
    m = master(inherit, own)
    old = os.umask(0o027)  # the umask the user started the master with
    try:
        m.manager.start_autostart()
    finally:
        os.umask(old)
    m.run_until(lambda: m.state("inherit") == m.state("own") == "EXITED")
    assert (tmp_path / "inherited").stat().st_mode & 0o777 == 0o640  # 0666 & ~027: never forced to 0
    assert (tmp_path / "own").stat().st_mode & 0o777 == 0o600


# ---- output -------------------------------------------------------------------------------


def test_last_lines_are_kept_when_the_child_exits(master, tmp_path: Path) -> None:
    m = master(program(tmp_path, "brief", sh("echo first; echo last"), startsecs=0,
                       autorestart=Autorestart.NEVER))
    m.manager.start_autostart()
    m.run_until(lambda: m.state("brief") == "EXITED")
    assert (tmp_path / "brief.log").read_text() == "first\nlast\n"


def test_rotation_of_a_burst_keeps_every_line(master, tmp_path: Path) -> None:
    lines = 524_288  # 100 bytes each: 50 MiB
    # '%%': a command's '%' is Supervisor's expansion syntax.
    script = f"import sys\nw = sys.stdout.buffer.write\nfor i in range({lines}): w(b'%%08d %%090d\\n' %% (i, 0))"
    log = tmp_path / "burst.log"
    m = master(program(tmp_path, "burst", (PY, "-c", script), startsecs=0, autorestart=Autorestart.NEVER,
                       stdout_logfile_maxbytes=1 << 20, stdout_logfile_backups=60))
    m.manager.start_autostart()

    def files() -> list[Path]:
        return sorted(tmp_path.glob("burst.log.*"), key=lambda p: -int(p.suffix[1:])) + [log]

    m.run_until(lambda: sum(f.stat().st_size for f in files()) == lines * 100, timeout=30)
    m.run_until(lambda: m.state("burst") == "EXITED")
    files = files()
    assert 45 <= len(files) <= 55
    assert all(f.stat().st_size <= (1 << 20) + 100 for f in files)  # a line in progress is finished
    numbers = [int(line[:8]) for f in files for line in f.read_bytes().splitlines()]
    assert numbers == list(range(lines))


def test_flat_out_writer_costs_little_cpu(master, tmp_path: Path) -> None:
    size = 200 << 20
    m = master(program(tmp_path, "flood", ("head", "-c", str(size), "/dev/zero"), startsecs=0,
                       autorestart=Autorestart.NEVER, stdout_logfile_maxbytes=64 << 20,
                       stdout_logfile_backups=4))
    before = resource.getrusage(resource.RUSAGE_SELF)
    m.manager.start_autostart()
    try:
        m.run_until(lambda: sum(f.stat().st_size for f in tmp_path.glob("flood.log*")) == size, timeout=60)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        m.run_until(lambda: m.state("flood") == "EXITED")
        assert cpu < 2.0, f"reading {size >> 20} MiB cost {cpu:.2f} s of CPU"
        print(f"reading {size >> 20} MiB cost {cpu:.2f} s of CPU")
    finally:
        for f in tmp_path.glob("flood.log*"):
            f.unlink()  # 200 MiB is too much to leave in the kept temporary directories


def test_output_to_the_masters_stdout_is_prefixed(master, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        m = master(program(tmp_path, "chat", sh("printf 'hel'; sleep 0.2; printf 'lo\\nbye\\n'"),
                           stdout_logfile="-", startsecs=0, autorestart=Autorestart.NEVER),
                   stdout_fd=write_end)
        m.manager.start_autostart()
        got = bytearray()

        def read() -> bool:
            try:
                got.extend(os.read(read_end, 65536))
            except BlockingIOError:
                pass
            return got.count(b"\n") >= 2

        m.run_until(read)
        assert bytes(got) == b"chat | hello\nchat | bye\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_unwritable_log_does_not_stop_the_program(master, tmp_path: Path) -> None:
    # /dev/full fails every write with ENOSPC, as a full disk does.
    m = master(program(tmp_path, "full", ("head", "-c", str(8 << 20), "/dev/zero"), startsecs=0,
                       autorestart=Autorestart.NEVER, stdout_logfile="/dev/full",
                       stdout_logfile_maxbytes=0))
    m.manager.start_autostart()
    m.run_until(lambda: m.state("full") == "EXITED" and m.info("full")["log_dropped_bytes"] == 8 << 20)
    assert m.info("full")["exitstatus"] == 0  # it was never blocked on a full pipe
    assert len(m.messages("cannot write log file /dev/full")) == 1
