"""Programs supervised by the real master: Supervisor configs as people write them, programs
beside the web app, and what happens to them when the master stops or upgrades."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import xmlrpc.client
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, run_arbiter, wait_until

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "supervisor"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    target = tmp_path / "supervisor"
    shutil.copytree(FIXTURES, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared originals are read-only
    return target


def _master_log(copy: Path, name: str) -> Path:
    """Where a fixture's [supervisord] logfile sends the master's log."""
    match = re.search(r"^logfile=%\(here\)s/(\S+)", (copy / name).read_text(), re.MULTILINE)
    assert match, name
    return copy / match.group(1)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_supervisor_config_runs_as_written(arbiter, fixture_copy, name):
    expected = EXPECTED[name]
    master = arbiter(["-c", str(fixture_copy / name)], bind=False)
    log_path = _master_log(fixture_copy, name)
    wait_until(lambda: log_path.exists(), what="the master's log file")

    def log() -> str:
        if master.proc.poll() is not None:
            raise AssertionError(f"master exited {master.proc.returncode}:\n{master.log()}\n{log_path.read_text()}")
        return log_path.read_text()

    for full in expected.get("running", []):
        process = full.split(":")[-1]
        wait_until(lambda: f"success: {process} entered RUNNING state" in log(), timeout=20, what=f"{full} RUNNING")
    for stopped in expected.get("stopped", []):
        assert f"spawned: '{stopped}'" not in log()
    for relative, needles in expected.get("log_contains", {}).items():
        path = fixture_copy / relative
        for needle in needles:
            wait_until(lambda: path.exists() and needle in path.read_text(), what=f"{needle!r} in {relative}")
    for warned in expected.get("warnings_name", []):
        assert re.search(rf"\[WARNING\] .*{re.escape(warned)}", log()), warned
    children = psutil.Process(master.pid).children(recursive=True)
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0
    wait_until(lambda: not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children),
               what="every program stopped with the master")
    assert "Shutting down: Master" in log_path.read_text()


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "arbiter.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_web_app_and_programs_in_one_file_and_a_crashing_program_spares_the_workers(arbiter, tmp_path):
    path = _toml(tmp_path, f'''
        wsgi_app = "asgi_app:app"
        workers = 2

        [programs.crasher]
        command = "sh -c 'echo crashing; exit 1'"
        startsecs = 1
        startretries = 1
        stdout_logfile = "{tmp_path}/crasher.log"

        [programs.steady]
        command = "sleep 600"
        startsecs = 0
        priority = 10
    ''')
    master = arbiter(["-c", str(path)])
    workers = master.wait_ready(2)
    master.wait_log(r"gave up: crasher entered FATAL state, too many start retries too quickly", timeout=30)
    master.wait_log(r"success: steady entered RUNNING state")
    assert set(workers) <= {child.pid for child in psutil.Process(master.pid).children()}  # untouched
    assert master.get("/")[0] == 200
    # first try + 1 retry (the backoff's arithmetic is tested on a fake clock in test_program_manager)
    assert (tmp_path / "crasher.log").read_text().count("crashing") == 2
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0
    assert "stopped: steady (terminated by SIGTERM)" in master.log()


def test_programs_only_config_is_a_supervisord(arbiter, tmp_path):
    marker = tmp_path / "out.log"
    path = _toml(tmp_path, f'''
        [programs.writer]
        command = ["sh", "-c", "echo hello from $GREETING; exec sleep 600"]
        environment = {{ GREETING = "arbiter" }}
        stdout_logfile = "{marker}"
        startsecs = 0
    ''')
    master = arbiter(["-c", str(path)], bind=False)
    master.wait_log(r"success: writer entered RUNNING state")
    wait_until(lambda: marker.exists() and "hello from arbiter" in marker.read_text())
    assert "Listening at" not in master.log()
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0


def _copies(marker: str) -> list[psutil.Process]:
    """Live processes whose command line holds `marker` (this test's own temporary path)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_sigkilled_masters_programs_are_stopped_by_the_next_master(arbiter, tmp_path):
    # A program that ignores SIGTERM, so that the orphan must be stopped with SIGKILL too.
    marker = str(tmp_path / "orphan-marker")
    path = _toml(tmp_path, f'''
        [programs.lone]
        command = ["python3", "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)", "{marker}"]
        startsecs = 0
        stopwaitsecs = 1
        stdout_logfile = "{tmp_path}/lone.log"
    ''')
    args = ["-c", str(path), "--pid", str(tmp_path / "arbiter.pid"),
            "--control-socket", str(tmp_path / "ctl.sock")]
    first = arbiter(args, bind=False)
    pid = int(first.wait_log(r"spawned: 'lone' with pid (\d+)")[0].group(1))
    orphan = psutil.Process(pid)  # psutil refuses to signal it should the pid be reused
    record = tmp_path / "arbiter.pid.programs"
    wait_until(lambda: record.exists() and str(pid) in record.read_text(), what="the record of programs")
    assert record.stat().st_mode & 0o777 == 0o600
    (entry,) = json.loads(record.read_text())["programs"]
    with open(f"/proc/{pid}/stat") as stat:
        starttime = int(stat.read().rsplit(")", 1)[1].split()[19])
    assert (entry["name"], entry["pid"], entry["pgid"], entry["starttime"]) == ("lone", pid, pid, starttime)
    assert entry["stdout_fd"] >= 0 and entry["stopwaitsecs"] == 1
    wait_until(lambda: "up" in (tmp_path / "lone.log").read_text(), what="the program running")
    try:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert orphan.is_running() and [p.pid for p in _copies(marker)] == [pid]  # it outlived the master

        second = arbiter(args, bind=False)
        second.wait_log(rf"lone \(pid {pid}\) was left running by a previous master")
        second.wait_log(rf"killing lone \(pid {pid}\), left by a previous master, with SIGKILL")
        new = int(second.wait_log(r"spawned: 'lone' with pid (\d+)")[0].group(1))
        assert new != pid and _gone(orphan)
        log = second.log()
        assert log.index("left by a previous master") < log.index("spawned: 'lone'")  # never two copies
        assert [p.pid for p in _copies(marker)] == [new]
        wait_until(lambda: str(new) in record.read_text() and str(pid) not in record.read_text(),
                   what="the record naming the new copy")
        second.signal(signal.SIGTERM)
        assert second.wait_exit(20) == 0
        assert not record.exists()  # every program stopped: nothing to find
    finally:
        try:
            orphan.kill()
            os.waitpid(pid, os.WNOHANG)  # reparented to us if the tests run under a subreaper
        except (psutil.NoSuchProcess, ChildProcessError):
            pass


def test_a_reused_pid_in_the_record_is_never_touched(arbiter, tmp_path):
    # A record naming a live process of ours, but with another start time: as if its pid had
    # been given to another process since. The next master must leave that process alone.
    bystander = psutil.Popen(["sleep", "600"], start_new_session=True)
    try:
        record = tmp_path / "arbiter.pid.programs"
        record.write_text(json.dumps({"version": 1, "master": {"pid": 1 << 22, "starttime": 1}, "programs": [{
            "name": "lone", "group": "lone", "pid": bystander.pid, "starttime": 1, "pgid": bystander.pid,
            "started": 0, "state": "RUNNING", "stopsignal": 15, "stopwaitsecs": 1, "stopasgroup": False,
            "killasgroup": False}]}))
        path = _toml(tmp_path, '''
            [programs.lone]
            command = "sleep 600"
            startsecs = 0
        ''')
        master = arbiter(["-c", str(path), "--pid", str(tmp_path / "arbiter.pid")], bind=False)
        master.wait_log(r"spawned: 'lone' with pid")
        assert "left running by a previous master" not in master.log()
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
        master.signal(signal.SIGTERM)
        assert master.wait_exit(20) == 0
    finally:
        bystander.kill()
        bystander.wait(5)


@pytest.mark.parametrize(("line", "user_umask", "mode"), [
    ("", 0o077, 0o644),  # no umask in [supervisord]: Supervisor's 022, whatever the user's
    ("umask=027", 0o000, 0o640),
])
def test_a_supervisord_conf_programs_files_get_supervisors_umask(arbiter, tmp_path, line, user_umask, mode):
    made = tmp_path / "made-by-program"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [supervisord]
        logfile={tmp_path}/supervisord.log
        {line}

        [program:touch]
        command=python3 -c "open('{made}', 'w').close()"
        startsecs=0
        autorestart=false
    """))
    old = os.umask(user_umask)  # the master inherits it, as from a user's shell
    try:
        master = arbiter(["-c", str(conf)], bind=False)
    finally:
        os.umask(old)
    log = tmp_path / "supervisord.log"
    wait_until(lambda: log.exists() and "exited: touch" in log.read_text(), what="the program ran")
    assert made.stat().st_mode & 0o777 == mode
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0


def test_readme_example_tail_and_tail_f_show_a_program_logging_to_the_master(arbiter, tmp_path):
    # examples/arbiter.toml as the README runs it; its ticker logs to "-" (the master's stdout),
    # so tail reads the last 64 KiB the master keeps of it in memory.
    master = arbiter(["-c", str(ROOT / "examples" / "arbiter.toml")])
    sock = tmp_path / "control-0.sock"
    master.wait_log(r"ticker \| tick 1\n")
    result = run_arbiter(["ctl", "-s", str(sock), "tail", "ticker"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ticker started, pid ") and "tick 1\n" in result.stdout
    assert "ticker | " not in result.stdout  # the program's own bytes, not the master's framing
    assert run_arbiter(["ctl", "-s", str(sock), "tail", "-8", "ticker"]).stdout.endswith("\n")

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    follow = subprocess.Popen([sys.executable, "-m", "arbiter", "ctl", "-s", str(sock), "tail", "-f", "ticker"],
                              stdout=subprocess.PIPE, env=env, cwd=str(ROOT))
    try:
        seen = int(re.findall(r"tick (\d+)", result.stdout)[-1])
        got = bytearray()
        os.set_blocking(follow.stdout.fileno(), False)

        def new_tick() -> bool:
            try:
                got.extend(os.read(follow.stdout.fileno(), 65536) or b"")
            except BlockingIOError:
                pass
            return any(int(n) > seen for n in re.findall(r"tick (\d+)", got.decode()))

        wait_until(new_tick, timeout=15, what="tail -f printing a new tick")
    finally:
        follow.kill()
        follow.wait(5)
        follow.stdout.close()
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0


@pytest.mark.skipif(shutil.which("supervisorctl") is None, reason="supervisorctl not installed (pip install supervisor)")
def test_real_supervisorctl_start_all_answers_per_process_with_one_fatal(arbiter, tmp_path):
    sock = tmp_path / "supervisor.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [supervisord]
        logfile={tmp_path}/supervisord.log

        [unix_http_server]
        file={sock}

        [supervisorctl]
        serverurl=unix://{sock}

        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

        [program:steady]
        command=sleep 600
        startsecs=0

        [program:later]
        command=sleep 600
        startsecs=0
        autostart=false

        [program:flaky]
        command=sh -c "exit 1"
        startsecs=1
        startretries=0

        [program:ghost]
        command=/no/such/command
        autostart=false
        startretries=0
    """))
    master = arbiter(["-c", str(conf)], bind=False, control=False)  # the conf names the socket

    def supervisorctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True, text=True,
                              timeout=60, check=False)

    wait_until(lambda: sock.exists() and "FATAL" in supervisorctl("status", "flaky").stdout, timeout=20,
               what="flaky FATAL")
    # Without waiting, a process that cannot even be spawned is still said so, per process.
    from supervisor.xmlrpc import SupervisorTransport

    rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}"))
    (ghost,) = rpc.supervisor.startProcessGroup("ghost", False)
    assert (ghost["name"], ghost["status"]) == ("ghost", 50) and "can't find command" in ghost["description"]
    started = supervisorctl("start", "all")
    # One line per process it started (steady already ran), as under supervisord.
    assert sorted(started.stdout.splitlines()) == [
        "flaky: ERROR (spawn error)", "ghost: ERROR (spawn error)", "later: started"], started
    assert started.returncode != 0
    restarted = supervisorctl("restart", "all")
    lines = restarted.stdout.splitlines()
    assert {"steady: stopped", "later: stopped", "steady: started", "later: started",
            "flaky: ERROR (spawn error)", "ghost: ERROR (spawn error)"} <= set(lines), restarted
    assert "RUNNING" in supervisorctl("status", "later").stdout

    ctl = run_arbiter(["ctl", "-s", str(sock), "stop", "later"])
    assert ctl.returncode == 0, ctl.stdout + ctl.stderr
    ctl = run_arbiter(["ctl", "-s", str(sock), "start", "all"])
    assert sorted(ctl.stdout.splitlines()) == [
        "flaky: ERROR (spawn error)", "ghost: ERROR (spawn error)", "later: started"], ctl
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0


def test_metrics_count_each_programs_restarts(arbiter, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    path = _toml(tmp_path, '''
        [programs.blink]
        command = "sh -c 'sleep 0.2; exit 1'"
        startsecs = 0
        autorestart = true

        [programs.steady]
        command = "sleep 600"
        startsecs = 0
    ''')
    master = arbiter(["-c", str(path)], bind=False)
    master.wait_log(r"spawned: 'blink' with pid \d+", count=3)
    sock = str(tmp_path / "control-0.sock")

    def restarts() -> dict[str, float]:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(sock)
        with client:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := client.recv(65536):
                response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        return {s.labels["name"]: s.value for s in families["arbiter_program_restarts"].samples}

    counted = restarts()
    assert counted["blink"] >= 2 and counted["steady"] == 0, counted
    wait_until(lambda: restarts()["blink"] > counted["blink"], what="the counter going up")
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0


def test_a_toml_configs_programs_inherit_the_users_umask(arbiter, tmp_path):
    made = tmp_path / "made-by-program"
    path = _toml(tmp_path, f'''
        [programs.touch]
        command = ["python3", "-c", "open('{made}', 'w').close()"]
        startsecs = 0
        autorestart = false
        [programs.own]
        command = ["python3", "-c", "open('{made}-own', 'w').close()"]
        startsecs = 0
        autorestart = false
        umask = "077"
    ''')
    old = os.umask(0o027)  # the master inherits it, as from a user's shell
    try:
        master = arbiter(["-c", str(path)], bind=False)
    finally:
        os.umask(old)
    master.wait_log(r"exited: touch")
    master.wait_log(r"exited: own")
    assert made.stat().st_mode & 0o777 == 0o640  # never 0666: no umask of 0 forced on programs
    assert (tmp_path / "made-by-program-own").stat().st_mode & 0o777 == 0o600
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0
