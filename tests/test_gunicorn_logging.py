"""Gunicorn's logging flags, end to end: --log-config, --log-config-json, logconfig_dict,
--log-syslog (to a UDP and a unix datagram socket the test holds), --capture-output, -R."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import psutil
from conftest import APPS, ROOT, http_get, wait_until


def _listening_port(path) -> int:
    found = wait_until(lambda: path.exists() and re.search(r"Listening at: http://127\.0\.0\.1:(\d+)",
                                                           path.read_text()), 20, what=f"Listening in {path}")
    return int(found.group(1))


def test_log_config_ini_configures_gunicorns_logger_names(arbiter, tmp_path):
    errors, access = tmp_path / "errors.log", tmp_path / "access.log"
    conf = tmp_path / "logging.ini"
    conf.write_text(textwrap.dedent(f"""\
        [loggers]
        keys = root, gunicorn.error, gunicorn.access

        [handlers]
        keys = errors, access

        [formatters]
        keys = plain

        [logger_root]
        level = WARNING
        handlers =

        [logger_gunicorn.error]
        level = INFO
        handlers = errors
        propagate = 0
        qualname = gunicorn.error

        [logger_gunicorn.access]
        level = INFO
        handlers = access
        propagate = 0
        qualname = gunicorn.access

        [handler_errors]
        class = FileHandler
        formatter = plain
        args = ({str(errors)!r}, "a")

        [handler_access]
        class = FileHandler
        formatter = plain
        args = ({str(access)!r}, "a")

        [formatter_plain]
        format = INI %(levelname)s %(message)s
        """))
    arbiter(["wsgi_app:application", "--log-config", str(conf), "--access-logfile", "-"])
    port = _listening_port(errors)
    assert "INI INFO Starting arbiter" in errors.read_text()
    assert http_get(port, "/x")[0] == 200
    wait_until(lambda: access.exists() and re.search(r'^INI INFO .*"GET /x HTTP/1.1" 200', access.read_text(),
                                                     re.MULTILINE), 10, what="access line")


def test_log_config_json_and_logconfig_dict(arbiter, tmp_path):
    errors = tmp_path / "json.log"
    config = {"formatters": {"f": {"format": "JSON %(message)s"}},
              "handlers": {"h": {"class": "logging.FileHandler", "filename": str(errors), "formatter": "f"}},
              "loggers": {"gunicorn.error": {"handlers": ["h"], "level": "INFO", "propagate": False}}}
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    arbiter(["wsgi_app:application", "--log-config-json", str(path)])
    _listening_port(errors)
    assert "JSON Starting arbiter" in errors.read_text()

    dict_log = tmp_path / "dict.log"
    config["handlers"]["h"]["filename"] = str(dict_log)
    config["formatters"]["f"]["format"] = "DICT %(message)s"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"logconfig_dict = {config!r}\n")
    arbiter(["-c", str(conf), "wsgi_app:application"])
    _listening_port(dict_log)
    assert "DICT Starting arbiter" in dict_log.read_text()


def test_a_broken_log_config_is_refused_at_start(tmp_path):
    from conftest import run_arbiter

    bad = tmp_path / "bad.json"
    bad.write_text('{"handlers": {"h": {"class": "no.such.Handler"}}}')
    result = run_arbiter(["wsgi_app:application", "--log-config-json", str(bad)])
    assert result.returncode == 2
    assert f"--log-config-json {bad}: not a usable logging config" in result.stderr


def _receive(sock: socket.socket, pattern: str, seen: list[bytes]) -> re.Match[str]:
    def check():
        with contextlib.suppress(BlockingIOError):
            while True:
                seen.append(sock.recv(65536))
        for packet in seen:
            match = re.search(pattern, packet.decode(errors="replace"))
            if match:
                return match
        return None

    return wait_until(check, 20, what=f"a syslog packet matching {pattern!r}")


def test_syslog_over_udp_with_prefix_and_facility(arbiter):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    try:
        address = f"udp://127.0.0.1:{receiver.getsockname()[1]}"
        master = arbiter(["wsgi_app:application", "--log-syslog", "--log-syslog-to", address,
                          "--log-syslog-prefix", "shop", "--log-syslog-facility", "local3"])
        master.wait_ready(1)
        seen: list[bytes] = []
        # <PRI>: facility local3 (19) * 8 + severity info (6) = 158
        started = _receive(receiver, r"^<158>arbiter\.shop\.error: \[(\d+)\] Listening at: http://", seen)
        assert int(started.group(1)) == master.pid
        assert master.get("/via-syslog")[0] == 200
        _receive(receiver, r'^<158>arbiter\.shop\.access: \[\d+\] .*"GET /via-syslog HTTP/1\.1" 200', seen)
    finally:
        receiver.close()


def test_syslog_to_a_unix_datagram_socket_without_the_access_log(arbiter, tmp_path):
    path = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    try:
        master = arbiter(["wsgi_app:application", "--log-syslog", "--log-syslog-to", f"unix://{path}#dgram",
                          "--disable-redirect-access-to-syslog", "-n", "web"])
        master.wait_ready(1)
        seen: list[bytes] = []
        _receive(receiver, r"^<14>arbiter\.web\.error: \[\d+\] Listening at", seen)  # user (1) * 8 + info (6)
        assert master.get("/not-in-syslog")[0] == 200
        _receive(receiver, r"Booting worker|Worker .* booted|Using worker", seen)
        assert not any(b"not-in-syslog" in packet for packet in seen)
    finally:
        receiver.close()


def test_capture_output_sends_prints_to_the_error_log(arbiter, tmp_path):
    errors = tmp_path / "error.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("import sys\n\ndef post_worker_init(worker):\n"
                    "    print('printed by the worker', flush=True)\n"
                    "    sys.stderr.write('written to stderr\\n')\n")
    master = arbiter(["-c", str(conf), "wsgi_app:application", "--error-logfile", str(errors), "--capture-output"])
    _listening_port(errors)
    wait_until(lambda: "printed by the worker" in errors.read_text() and "written to stderr" in errors.read_text(),
               15, what="captured output")
    assert "printed by the worker" not in master.log()  # not on the terminal any more


def _daemon(tmp_path, extra: list[str]) -> tuple[str, int]:
    """Start `arbiter -D` with stdout/stderr on a file; return that file's text once it served."""
    out = tmp_path / f"out{len(extra)}.txt"
    pidfile = tmp_path / f"daemon{len(extra)}.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)])}
    with open(out, "wb") as handle:
        subprocess.run([sys.executable, "-m", "arbiter", "wsgi_app:application", "-D", "-p", str(pidfile),
                        "-b", "127.0.0.1:0", "--control-socket", "none", *extra],
                       stdout=handle, stderr=handle, stdin=subprocess.DEVNULL, env=env, timeout=30, check=True)
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15, what="pidfile"))
    return str(out), pid


def _stop(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_enable_stdio_inheritance_keeps_a_redirected_stderr_when_daemonized(tmp_path):
    kept_out, kept = _daemon(tmp_path, ["-R"])
    try:
        wait_until(lambda: "Listening at" in open(kept_out).read(), 15, what="the daemon's log on its stderr")
    finally:
        _stop(kept)
    dropped_out, dropped = _daemon(tmp_path, [])
    try:
        port = wait_until(lambda: [c.laddr.port for c in psutil.Process(dropped).net_connections()
                                   if c.status == psutil.CONN_LISTEN], 15, what="the daemon listening")[0]
        assert http_get(port, "/")[0] == 200
        assert "Listening at" not in open(dropped_out).read()
    finally:
        _stop(dropped)
