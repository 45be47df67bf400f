"""`arbiter ctl` against a live server: every command, its output and its exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from arbiter.ctl.cli import main
from control_helpers import ServerLoop, make_loop, served, wait_until  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent


def ctl(loop: ServerLoop, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["-s", loop.unix_path, *args])
    out, err = capsys.readouterr()
    return code, out + err


def test_status(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = ctl(served, capsys, "status")
    lines = out.splitlines()
    assert code == 3  # idle and broken are stopped
    assert lines[0].startswith(f"master pid {os.getpid()}  RUNNING  version 0.1.0")
    assert "2/2 ready" in lines[0] and lines[2].split()[:2] == ["4100001", "READY"]
    assert lines[4].split()[:3] == ["ticker", "RUNNING", "pid"] and "\x1b[" not in out  # no colour when piped
    assert ctl(served, capsys, "status", "ticker", "pool:*")[0] == 0
    code, out = ctl(served, capsys, "status", "ticker", "ghost", "nogroup:*")
    assert code == 4 and "ghost: ERROR (no such process)" in out and "nogroup:*: ERROR (no such group)" in out
    code, out = ctl(served, capsys, "--json", "status", "pool:pool_1")
    assert code == 0 and json.loads(out)[0]["pid"] == 4000002
    code, out = ctl(served, capsys, "--json", "status")
    assert json.loads(out)["master"]["workers_target"] == 2


def test_json_after_the_command(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = ctl(served, capsys, "status", "--json")
    assert json.loads(out)["master"]["workers_target"] == 2
    code, out = ctl(served, capsys, "status", "pool:pool_1", "--json")
    assert code == 0 and json.loads(out)[0]["pid"] == 4000002
    code, out = ctl(served, capsys, "scale", "+1", "--json")
    assert code == 0 and json.loads(out) == {"workers_target": 3}
    code, out = ctl(served, capsys, "stop", "--json", "ticker")
    assert code == 0 and json.loads(out)[0]["status"] == "OK"
    from arbiter.ctl.cli import ctl as group
    for name, command in group.commands.items():  # every command takes it
        assert any("--json" in p.opts for p in command.params), name


def test_start_stop_restart_signal(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "stop", "ticker") == (0, "ticker: stopped\n")
    assert ctl(served, capsys, "stop", "ticker") == (0, "ticker: ERROR (not running)\n")  # ignored, as supervisorctl
    assert ctl(served, capsys, "start", "ticker") == (0, "ticker: started\n")
    assert ctl(served, capsys, "start", "ticker") == (0, "ticker: ERROR (already started)\n")
    assert ctl(served, capsys, "start", "broken") == (7, "broken: ERROR (spawn error)\n")
    assert ctl(served, capsys, "start", "ghost") == (1, "ghost: ERROR (no such process)\n")
    assert ctl(served, capsys, "start", "ghost:*")[0] == 2
    assert ctl(served, capsys, "start")[0] == 2
    assert ctl(served, capsys, "stop")[0] == 1
    code, out = ctl(served, capsys, "restart", "pool:*")
    assert (code, out) == (0, "pool:pool_0: restarted\npool:pool_1: restarted\n")
    assert ctl(served, capsys, "signal", "HUP", "ticker") == (0, "ticker: signalled\n")
    assert served.backend.signals[-1] == ("ticker", "HUP")
    assert ctl(served, capsys, "signal", "HUP", "idle") == (7, "idle: ERROR (not running)\n")
    code, out = ctl(served, capsys, "signal", "BOGUS", "ticker")
    assert (code, out) == (1, "ticker: ERROR (bad signal name)\n")  # as supervisorctl
    code, out = ctl(served, capsys, "--json", "stop", "all")
    assert code == 0 and {r["name"] for r in json.loads(out)} >= {"ticker", "pool_0"}


def test_tail_maintail_clear_pid(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    log = Path(served.backend.programs[0]["stdout_logfile"])
    log.write_bytes(b"x" * 2000 + b"the end\n")
    code, out = ctl(served, capsys, "tail", "ticker")
    assert code == 0 and out == "x" * 1592 + "the end\n"  # 1600 bytes, as supervisorctl
    assert ctl(served, capsys, "tail", "-4", "ticker") == (0, "end\n")
    assert ctl(served, capsys, "tail", "ticker", "stderr") == (0, "ticker stderr line 1\n")
    assert ctl(served, capsys, "tail", "ghost") == (1, "ghost: ERROR (no such process name)\n")
    assert ctl(served, capsys, "tail", "ticker", "stdin")[0] == 1
    assert ctl(served, capsys, "tail")[0] == 1
    assert ctl(served, capsys, "maintail", "-8") == (0, "started\n")
    assert ctl(served, capsys, "clear", "ticker") == (0, "ticker: cleared\n")
    assert log.read_bytes() == b""
    assert ctl(served, capsys, "clear", "ghost")[0] == 1
    assert ctl(served, capsys, "pid") == (0, f"{os.getpid()}\n")
    assert ctl(served, capsys, "pid", "pool:pool_0") == (0, "4000001\n")
    assert ctl(served, capsys, "pid", "idle") == (7, "0\n")
    assert ctl(served, capsys, "pid", "ghost") == (1, "No such process ghost\n")
    assert ctl(served, capsys, "pid", "all")[1].split()[:2] == [str(os.getpid()), "4000001"]


def test_configuration_commands(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "reread") == (0, "extra: available\n")
    code, out = ctl(served, capsys, "avail")
    assert code == 0 and out.splitlines()[-1].split() == ["extra", "avail"]
    assert ctl(served, capsys, "add", "extra") == (0, "extra: added process group\n")
    assert ctl(served, capsys, "add", "extra") == (1, "ERROR: process group already active: extra\n")
    assert ctl(served, capsys, "reread") == (0, "No config updates to processes\n")
    assert ctl(served, capsys, "remove", "ticker") == (1, "ERROR: process/group still running: ticker\n")
    assert ctl(served, capsys, "remove", "extra") == (0, "extra: removed process group\n")
    assert ctl(served, capsys, "update") == (0, "extra: added process group\n")
    assert ctl(served, capsys, "version") == (0, "0.1.0\n")


def test_reload_scale_shutdown(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "reload") == (0, "reload started\n")
    wait_until(lambda: served.backend.master["reload"]["state"] == "done")
    code, out = ctl(served, capsys, "reload", "--wait")
    assert code == 0 and out.splitlines()[-1] == "reload done"
    served.backend.reload_fails = True
    code, out = ctl(served, capsys, "reload", "--wait")
    assert code == 1 and "RELOAD_FAILED" in out.splitlines()[-1]
    assert ctl(served, capsys, "scale", "+2") == (0, "workers target: 4\n")
    assert ctl(served, capsys, "scale", "-1") == (0, "workers target: 3\n")
    assert ctl(served, capsys, "scale", "=1") == (0, "workers target: 1\n")
    code, out = ctl(served, capsys, "scale", "lots")
    assert code == 1 and "BAD_ARGUMENTS" in out
    assert ctl(served, capsys, "shutdown") == (0, "Shut down\n")
    assert served.backend.master["state"] == "STOPPING"


def test_unreachable_servers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.sock")
    assert main(["-s", missing, "status"]) == 4
    assert "No such file" in capsys.readouterr().err
    assert main(["-s", missing, "stop", "x"]) == 7  # ENOENT: supervisorctl's "not running"
    assert main(["-s", missing, "reload", "--wait"]) == 7  # as every command but status
    assert main(["-s", missing, "reload"]) == 7
    err = capsys.readouterr().err
    assert err.count("point arbiter ctl at it with -s PATH, -c CONFIG") == 3 and "$ARBITER_SOCKET" in err
    import socket
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(tmp_path / "dead.sock"))  # bound, never listening: connection refused
    try:
        assert main(["-s", str(tmp_path / "dead.sock"), "stop", "x"]) == 4
        assert main(["-s", str(tmp_path / "dead.sock"), "status"]) == 4
    finally:
        dead.close()


def test_socket_from_config_and_environment(served: ServerLoop, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """ctl finds the socket by the master's own rule: -s > -c (as the master reads it, the
    ARBITER_* variables over the file) > $ARBITER_SOCKET > the master's rule without a file."""
    name = Path(served.unix_path).name
    monkeypatch.chdir(tmp_path)  # relative paths are relative to where the command runs
    for key in [k for k in os.environ if k.startswith("ARBITER_")]:
        monkeypatch.delenv(key)
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"[unix_http_server]\nfile=%(here)s/{name}\n")
    assert main(["-c", str(conf), "version"]) == 0
    conf.write_text(f"[unix_http_server]\nfile={name}\n")
    assert main(["-c", str(conf), "version"]) == 0
    # Not ./arbiter.toml: with no -c, the master (and so ctl) would read that one by itself.
    toml = tmp_path / "named.toml"
    toml.write_text(f'control_socket = "{served.unix_path}"\n')
    assert main(["-c", str(toml), "version"]) == 0
    pyconf = tmp_path / "conf.py"
    pyconf.write_text(f'workers = 2\ncontrol_socket = "{name}"\n')
    assert main(["-c", str(pyconf), "version"]) == 0
    toml.write_text('control_socket = "elsewhere.sock"\n')
    monkeypatch.setenv("ARBITER_CONTROL_SOCKET", served.unix_path)  # over the file, as for the master
    assert main(["-c", str(toml), "version"]) == 0
    assert main(["version"]) == 0  # no file: the master's variable alone
    monkeypatch.delenv("ARBITER_CONTROL_SOCKET")
    assert main(["-c", str(toml), "version"]) == 7  # ./elsewhere.sock: nothing there
    monkeypatch.setenv("ARBITER_SOCKET", served.unix_path)
    assert main(["version"]) == 0
    assert main(["-s", str(tmp_path / "other.sock"), "version"]) == 7  # -s first
    monkeypatch.delenv("ARBITER_SOCKET")
    assert main(["status"]) == 4  # ./arbiter.sock: nothing there
    toml.write_text('control_socket = "none"\n')
    assert main(["-c", str(toml), "status"]) == 2
    assert main(["-c", str(tmp_path / "missing.toml"), "status"]) == 2
    out = capsys.readouterr()
    assert out.out.count("0.1.0") == 7
    assert f"{tmp_path}/elsewhere.sock" in out.err and f"{tmp_path}/arbiter.sock" in out.err
    assert "turns the control socket off" in out.err and "missing.toml does not exist" in out.err
    assert "-s PATH, -c CONFIG" in out.err and "$ARBITER_SOCKET" in out.err


def test_tcp_with_token(make_loop, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), token="tok")
    url = f"http://127.0.0.1:{loop.port}"
    assert main(["--url", url, "version"]) == 1
    assert "UNAUTHORIZED" in capsys.readouterr().err
    assert main(["--url", url, "--token", "tok", "version"]) == 0
    monkeypatch.setenv("ARBITER_TOKEN", "tok")
    assert main(["--url", url, "stop", "ticker"]) == 0
    assert capsys.readouterr().out.endswith("ticker: stopped\n")


def test_tcp_with_basic_auth_in_the_url(make_loop, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARBITER_TOKEN", raising=False)
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), username="admin", password="p@ss word")
    assert main(["--url", f"http://admin:p%40ss%20word@127.0.0.1:{loop.port}", "version"]) == 0
    assert main(["--url", f"http://admin:wrong-pw@127.0.0.1:{loop.port}", "version"]) == 1
    out = capsys.readouterr()
    assert out.out == "0.1.0\n" and "UNAUTHORIZED" in out.err and "wrong-pw" not in out.err + out.out


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "arbiter.ctl.cli", *args], capture_output=True, text=True,
                          env=env, timeout=30, **kwargs)  # type: ignore[call-overload]


def test_module_entry_point_and_shell(served: ServerLoop) -> None:
    result = _run(["-s", served.unix_path, "status", "ghost"])
    assert result.returncode == 4 and "ghost: ERROR (no such process)" in result.stdout
    result = _run(["-s", served.unix_path], input="status ticker\nstop ticker\nhelp\nbogus\nquit\n")
    assert result.returncode == 0
    assert "ticker                           RUNNING" in result.stdout and "ticker: stopped" in result.stdout
    assert "commands: add avail clear" in result.stdout and "No such command 'bogus'" in result.stderr
    from arbiter.ctl.shell import Shell
    shell = Shell(lambda args: 0, ["start", "status", "stop"], lambda: ["ticker", "pool:pool_0"])
    assert shell.completenames("st") == ["start ", "status ", "stop "]
    assert shell.completedefault("po", "stop po", 5, 7) == ["pool:pool_0 "]


def test_tail_follow(served: ServerLoop) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "arbiter.ctl.cli", "-s", served.unix_path, "tail", "-f", "ticker"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        seen = bytearray()

        def has(needle: bytes) -> bool:
            seen.extend(proc.stdout.read() or b"")  # type: ignore[union-attr]
            return needle in seen
        wait_until(lambda: has(b"ticker stdout line 1"), what="the tail")
        with open(served.backend.programs[0]["stdout_logfile"], "ab") as f:
            f.write(b"more from ticker\n")
        wait_until(lambda: has(b"more from ticker\n"), what="the appended line")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_log_that_cannot_be_written_shows_in_the_table(served: ServerLoop, capsys: pytest.CaptureFixture[str]) -> None:
    served.backend.programs[0]["log_dropped_bytes"] = 4096
    code, out = ctl(served, capsys, "status", "ticker")
    assert code == 0 and "[log not written: 4096 bytes dropped, see the master's log]" in out
    assert "log not written" not in ctl(served, capsys, "status", "idle")[1]
