"""Operating a running master: systemd notify, pidfile, log reopening, daemon mode, --reload,
and a storm of signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from conftest import APPS, ROOT, http_get, replace_file, wait_until
from load import Load


def test_systemd_notify_messages(arbiter, tmp_path):
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(20)
    try:
        master = arbiter(["asgi_app:app", "-w", "2"], env={"NOTIFY_SOCKET": str(path)})

        def receive() -> dict[str, str]:
            message = listener.recv(4096).decode()
            return dict(line.split("=", 1) for line in message.split("\n"))

        ready = receive()
        assert ready["READY"] == "1" and ready["MAINPID"] == str(master.pid)
        assert ready["STATUS"] == "2 of 2 workers ready, generation 1"
        master.signal(signal.SIGHUP)
        reloading = receive()
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        done = receive()
        assert done["READY"] == "1" and done["STATUS"] == "Reload done; 2 of 2 workers ready, generation 2"
        master.signal(signal.SIGTERM)
        assert receive() == {"STOPPING": "1", "STATUS": "Stopping"}
        assert master.wait_exit() == 0
    finally:
        listener.close()


def test_pidfile_names_the_live_master_and_is_removed(arbiter, tmp_path):
    pidfile = tmp_path / "arbiter.pid"
    master = arbiter(["asgi_app:app", "--pid", str(pidfile)])
    master.wait_ready(1)
    assert pidfile.read_text() == f"{master.pid}\n"
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert not pidfile.exists()


def test_usr1_reopens_log_files_in_master_and_workers(arbiter, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    master = arbiter(["wsgi_app:app", "-k", "sync", "-w", "1", "--error-logfile", str(error_log),
                      "--access-logfile", str(access_log)])
    wait_until(lambda: error_log.exists() and "Listening at" in error_log.read_text())
    port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", error_log.read_text()).group(1))
    wait_until(lambda: _answers(port))
    error_log.rename(tmp_path / "error.log.1")
    access_log.rename(tmp_path / "access.log.1")
    master.signal(signal.SIGUSR1)
    wait_until(lambda: error_log.exists(), what="the master to reopen its log")
    master.signal(signal.SIGTTIN)
    wait_until(lambda: "Workers: 1 -> 2" in error_log.read_text())
    wait_until(lambda: access_log.exists(), what="the worker to reopen the access log")
    assert http_get(port, "/after-rotation")[0] == 200
    wait_until(lambda: "/after-rotation" in access_log.read_text())


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/", timeout=2)[0] == 200
    except OSError:
        return False


def test_daemon_mode_detaches_and_winch_stops_only_the_workers(tmp_path):
    pidfile, error_log = tmp_path / "d.pid", tmp_path / "d.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(ROOT)]))
    launcher = subprocess.run(
        [sys.executable, "-m", "arbiter", "asgi_app:app", "-w", "2", "-D", "--pid", str(pidfile),
         "--error-logfile", str(error_log), "-b", "127.0.0.1:0"], env=env, cwd=ROOT, timeout=20)
    assert launcher.returncode == 0  # the launcher returns; the daemon carries on
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
    try:
        daemon = psutil.Process(pid)
        assert daemon.ppid() != os.getpid()
        port = int(wait_until(lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", error_log.read_text())).group(1))
        wait_until(lambda: len(daemon.children()) == 2 and _answers(port))
        os.kill(pid, signal.SIGWINCH)
        wait_until(lambda: not daemon.children(), what="workers stopped by WINCH")
        assert daemon.is_running()
        os.kill(pid, signal.SIGHUP)  # and HUP brings them back, on the same socket
        wait_until(lambda: len(daemon.children()) == 2 and _answers(port))
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not psutil.pid_exists(pid), what="the daemon to stop")
    finally:
        if psutil.pid_exists(pid):
            for child in psutil.Process(pid).children():
                child.kill()
            os.kill(pid, signal.SIGKILL)


def test_reload_flag_rolls_workers_when_a_file_changes(arbiter, tmp_path):
    app_dir = tmp_path / "dev"
    app_dir.mkdir()
    module = app_dir / "dev_app.py"
    source = textwrap.dedent('''
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"VERSION"})
    ''')
    module.write_text(source.replace("VERSION", "one"))
    master = arbiter(["dev_app:app", "-w", "1", "--reload", "--chdir", str(app_dir)])
    master.wait_ready(1)
    master.wait_log(r"Watching .* for changes")
    assert master.get("/") == (200, b"one")
    replace_file(module, source.replace("VERSION", "two"))
    master.wait_log(r"Reload done: generation 2", timeout=30)
    assert master.get("/") == (200, b"two")


def test_signal_storm_converges_and_returns_to_baseline(arbiter):
    master = arbiter(["asgi_app:app", "-w", "3", "--log-level", "debug"])
    master.wait_ready(3)
    process = psutil.Process(master.pid)
    master.signal(signal.SIGHUP)
    master.wait_log(r"Reload done: generation 2", timeout=30)
    baseline_fds, baseline_rss = process.num_fds(), process.memory_info().rss
    with Load(master.port, slow=0) as load:
        for i in range(100):
            master.signal(signal.SIGHUP)
            if i % 10 == 3:
                master.signal(signal.SIGTTIN)
            if i % 10 == 7:
                master.signal(signal.SIGTTOU)
            time.sleep(0.01)  # paces the storm at ~100 signals a second; nothing to wait for

        def converged() -> bool:
            log = master.log()
            newest = re.findall(r"Reloading: starting generation (\d+)", log)[-1]
            return f"Reload done: generation {newest} serving" in log

        wait_until(converged, timeout=60, what="the newest generation to be the one serving")
        result = load.stop()

    def target() -> int:
        changes = re.findall(r"Workers: \d+ -> (\d+)", master.log())
        return int(changes[-1]) if changes else 3

    master.wait_workers(lambda w: len(w) == target(), what="the pool at its final count")
    assert result.failures == [], result.failures[:10]
    assert master.get("/")[0] == 200
    wait_until(lambda: process.num_fds() <= baseline_fds, what=f"fds back to {baseline_fds}")
    assert process.memory_info().rss < baseline_rss + 8 * 1024 * 1024


def test_systemd_socket_activation_adopts_the_passed_socket(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    log_path = tmp_path / "activated.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(ROOT)]))
    # As systemd does: the socket on fd 3, and LISTEN_PID naming the pid that exec keeps.
    script = (f"import os, sys; os.dup2({sock.fileno()}, 3); os.environ.update(LISTEN_FDS='1', "
              "LISTEN_PID=str(os.getpid())); os.execv(sys.executable, [sys.executable, '-m', 'arbiter', "
              "'asgi_app:app', '-w', '1'])")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", script], pass_fds=[sock.fileno()], env=env,
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sock.close()  # the master holds it now
    try:
        wait_until(lambda: _answers(port), timeout=20, what="the activated socket to answer")
        text = log_path.read_text()
        assert "Using 1 socket(s) from systemd socket activation" in text
        assert f"Listening at: http://127.0.0.1:{port}" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_hup_reapplies_the_log_level_and_an_unwritable_errorlog_is_not_fatal(arbiter, tmp_path):
    conf = tmp_path / "arbiter_conf.py"
    conf.write_text('workers = 1\nloglevel = "info"\n')
    master = arbiter(["-c", str(conf), "wsgi_app:app"])
    master.wait_ready(1)
    assert "[DEBUG]" not in master.log()
    conf.write_text('workers = 1\nloglevel = "debug"\n')
    master.signal(signal.SIGHUP)
    master.wait_log(r"Reload done: generation 2")
    master.wait_log(r"\[DEBUG\] Worker \(pid:\d+\) ready")  # the new level, in master and workers
    # A log that cannot be opened: said in the old log, the reload goes on, the master lives.
    missing = tmp_path / "no-such-dir" / "error.log"
    conf.write_text(f'workers = 1\nloglevel = "debug"\nerrorlog = {str(missing)!r}\n')
    master.signal(signal.SIGHUP)
    master.wait_log(rf"\[ERROR\] Reload: cannot open log file {re.escape(str(missing))}: No such file or directory")
    master.wait_log(r"Reload done: generation 3")
    assert master.get("/")[0] == 200
    assert master.proc.poll() is None


def _unix_get(path: str, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("caller, flag, files, sock_mode", [
    ("umask 022", [], 0o644, 0o755),  # the caller's umask is kept
    ("umask 000", [], 0o666, 0o775),  # unset: the socket still is not world-writable
    ("umask 022", ["--umask", "077"], 0o600, 0o700),  # Gunicorn's --umask wins, sockets too
])
def test_umask_is_the_callers_unless_set_and_nothing_of_ours_is_world_writable(
        arbiter, tmp_path, caller, flag, files, sock_mode):
    pidfile, errorlog, written, sock = (tmp_path / "a.pid", tmp_path / "error.log", tmp_path / "app.txt",
                                        tmp_path / "web.sock")
    master = arbiter(["write_app:app", "-b", f"unix:{sock}", "--pid", str(pidfile), "--error-logfile",
                      str(errorlog), *flag], shell_prefix=caller)
    wait_until(lambda: sock.exists() and pidfile.exists(), what="the socket and the pidfile")
    assert _unix_get(str(sock), f"/?path={written}").split(b"\r\n")[0].endswith(b" 200 OK")

    def mode(path):
        return os.stat(path).st_mode & 0o777

    assert mode(written) == files
    assert mode(errorlog) == files
    assert mode(pidfile) == 0o644 & files
    assert mode(sock) == sock_mode
    for path in (pidfile, sock):
        assert not mode(path) & 0o002
    master.signal(signal.SIGTERM)
    assert master.wait_exit() == 0


@pytest.mark.parametrize("silent", [False, True])
def test_supervisord_conf_with_nodaemon_logs_to_the_terminal_too_unless_silent(arbiter, tmp_path, silent):
    logfile = tmp_path / "supervisord.log"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [supervisord]
        nodaemon=true
        logfile={logfile}
        {"silent=true" if silent else ""}

        [program:sleeper]
        command=sleep 600
        startsecs=0
    """))
    master = arbiter(["-c", str(conf)], bind=False)
    wait_until(lambda: logfile.exists() and "sleeper entered RUNNING state" in logfile.read_text(),
               what="the program running, in the log file")
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0
    terminal = master.log()  # the master's stdout and stderr
    if silent:
        assert "Starting arbiter" not in terminal
    else:
        for line in ("Starting arbiter", "success: sleeper entered RUNNING state", "Shutting down: Master"):
            assert line in terminal and line in logfile.read_text()


def test_a_worker_out_of_file_descriptors_logs_it_once_not_twice_a_second(arbiter):
    master = arbiter(["wsgi_app:app", "-k", "sync", "-w", "1"], shell_prefix="ulimit -n 48")
    master.wait_ready(1)
    clients = []
    try:
        for _ in range(60):  # more than the worker has descriptors for: accept() fails with EMFILE
            clients.append(socket.create_connection(("127.0.0.1", master.port), timeout=5))
        master.wait_log(r"Cannot accept connections: \[Errno 24\]")
        # Before, the same line came every 0.5 s (each retry); wait through a few retries.
        time.sleep(1.6)
    finally:
        for client in clients:
            client.close()
    master.wait_log(r"Cannot accept connections: recovered after")
    assert len(re.findall(r"Cannot accept connections: \[Errno 24\]", master.log())) == 1
    assert master.get("/")[0] == 200
