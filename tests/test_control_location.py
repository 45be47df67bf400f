"""Where the control socket is: one rule (arbiter/control/location.py) for the master and for
`arbiter ctl`, so `arbiter -c conf/FILE ...` then `arbiter ctl -c conf/FILE status` from the same
folder always meet, whatever the kind of config file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, run_arbiter, wait_until

from arbiter.config.settings import Config
from arbiter.control.location import control_socket_path, control_tcp_address

CONFIGS = {
    # The file, and the socket the master should make when started from the folder above conf/.
    "app.py": ('workers = 1\npidfile = "run/app.pid"\n', "run/arbiter.sock"),
    "arbiter.toml": ('workers = 1\ncontrol_socket = "run/ctl.sock"\n', "run/ctl.sock"),
    "supervisord.conf": ("[unix_http_server]\nfile = run/supervisor.sock\n\n[supervisord]\nnodaemon = true\n\n"
                         f"[program:ticker]\ncommand = python3 -u {ROOT}/examples/ticker.py\nstartsecs = 0\n",
                         "run/supervisor.sock"),
}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_ctl_finds_the_master_from_the_same_config(arbiter, tmp_path: Path, kind: str) -> None:
    """The issue's command pair, as written: it failed with "File contains no section headers"
    for the .py file, and ctl resolved relative paths against conf/ instead of the folder."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "run").mkdir()
    text, socket = CONFIGS[kind]
    (tmp_path / "conf" / kind).write_text(text)
    app = [] if kind == "supervisord.conf" else ["asgi_app:app"]
    bind = kind != "supervisord.conf"
    master = arbiter(["-c", f"conf/{kind}", *app], bind=bind, control=False, cwd=tmp_path)
    wait_until(lambda: (tmp_path / socket).exists(), timeout=30, what=f"the socket {socket}")
    if bind:
        master.wait_ready(1)
    result = run_arbiter(["ctl", "-c", f"conf/{kind}", "status"], cwd=tmp_path)
    assert "error" not in result.stderr, result.stderr
    if bind:
        assert result.returncode == 0 and result.stdout.startswith(f"master pid {master.pid}")
    else:
        wait_until(lambda: "RUNNING" in run_arbiter(["ctl", "-c", f"conf/{kind}", "status"], cwd=tmp_path).stdout,
                   timeout=20, what="ticker RUNNING")
    pid = run_arbiter(["ctl", "-c", f"conf/{kind}", "pid"], cwd=tmp_path)
    assert pid.returncode == 0 and pid.stdout.strip() == str(master.pid)


def test_the_rule() -> None:
    cwd = "/srv/app"
    assert control_socket_path(Config(), cwd) == "/srv/app/arbiter.sock"
    assert control_socket_path(Config(pidfile="run/a.pid"), cwd) == "/srv/app/run/arbiter.sock"
    assert control_socket_path(Config(pidfile="/var/run/a.pid"), cwd) == "/var/run/arbiter.sock"
    assert control_socket_path(Config(control_socket="c.sock", pidfile="/x/a.pid"), cwd) == "/srv/app/c.sock"
    assert control_socket_path(Config(control_socket="/tmp/c.sock"), cwd) == "/tmp/c.sock"
    assert control_socket_path(Config(control_socket="None"), cwd) is None
    assert control_tcp_address(Config()) is None
    assert control_tcp_address(Config(control_bind=":9001")) == ("127.0.0.1", 9001)
    assert control_tcp_address(Config(control_bind="[::1]:9001")) == ("::1", 9001)
    with pytest.raises(ValueError, match="HOST:PORT"):
        control_tcp_address(Config(control_bind="localhost"))


def test_python_config_socket_beside_its_pidfile_without_a_master(tmp_path: Path) -> None:
    """No master: ctl still reads the .py file (as the master would) and says where it looked."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.py").write_text(textwrap.dedent('''
        import os
        workers = 2
        pidfile = "run/app.pid"
        def on_starting(server):
            pass
    '''))
    result = run_arbiter(["ctl", "-c", "conf/app.py", "status"], cwd=tmp_path)
    assert result.returncode == 4
    assert f"unix://{tmp_path}/run/arbiter.sock" in result.stderr and "no section headers" not in result.stderr
