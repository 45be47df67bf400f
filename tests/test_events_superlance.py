"""The real superlance listeners, unchanged, under Arbiter, and under the real supervisord with
the same configuration file (which proves the tests: they pass against the reference too).

- crashmail mails once when a program exits unexpectedly, and never for an expected exit.
- memmon, on TICK_5, restarts (over XML-RPC, with SUPERVISOR_SERVER_URL) a program that holds
  more memory than it is allowed, and leaves its neighbour alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

pytest.importorskip("superlance")
supervisor_xmlrpc = pytest.importorskip("supervisor.xmlrpc")
SUPERVISORD = shutil.which("supervisord")
PY = sys.executable


def rpc(sock: Path) -> Any:
    transport = supervisor_xmlrpc.SupervisorTransport("", "", f"unix://{sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


@pytest.fixture(params=["arbiter", "supervisord"])
def run(request: pytest.FixtureRequest, arbiter: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`run(body)`: a supervisord.conf with `body` under a master of either kind; its socket."""
    started: list[subprocess.Popen[bytes]] = []

    def start(body: str) -> Path:
        sock = tmp_path / "control.sock"
        conf = tmp_path / "supervisord.conf"
        conf.write_text(textwrap.dedent(f"""\
            [supervisord]
            pidfile={tmp_path}/master.pid
            childlogdir={tmp_path}

            [unix_http_server]
            file={sock}

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
        """) + textwrap.dedent(body))
        if request.param == "arbiter":
            arbiter(["-c", str(conf)], bind=False, control=False)
        else:
            if SUPERVISORD is None:
                pytest.skip("supervisord not installed (pip install supervisor)")
            log = open(tmp_path / "supervisord.out", "wb")
            # In tmp_path: supervisord's default logfile is ./supervisord.log.
            started.append(subprocess.Popen([SUPERVISORD, "-n", "-c", str(conf)], stdout=log, cwd=tmp_path,
                                            stderr=subprocess.STDOUT, start_new_session=True))
        wait_until(sock.exists, what="the control socket")
        return sock

    yield start
    for proc in started:  # supervisord stops its children on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_crashmail_mails_once_for_an_unexpected_exit_never_for_an_expected_one(run, tmp_path):
    mails = tmp_path / "mails"
    sendmail = tmp_path / "sendmail"
    # A stand-in for sendmail: each mail (read from stdin, as crashmail writes it) into its own
    # file, renamed into place once whole so the test never reads one half-written.
    sendmail.write_text(f'#!/bin/sh\ncat > "{mails}/.part-$$" && mv "{mails}/.part-$$" "{mails}/mail-$$"\n')
    sendmail.chmod(0o755)
    mails.mkdir()
    sock = run(f"""
        [program:ends]
        command=sh -c "sleep 1.2; exit 0"
        startsecs=1
        autorestart=false

        [program:dies]
        command=sh -c "sleep 2.5; exit 2"
        startsecs=1
        autorestart=false

        [eventlistener:crashmail]
        command={PY} -m superlance.crashmail -a -m ops@example.com -s {sendmail}
        events=PROCESS_STATE_EXITED
    """)
    server = rpc(sock)
    # One listener handles events in order: once the mail for `dies` is there, `ends`'s exit
    # (1.3 s earlier) has been handled too, and did not mail.
    wait_until(lambda: list(mails.glob("mail-*")), timeout=20, what="a mail")
    state = {p["name"]: p for p in server.supervisor.getAllProcessInfo()}
    assert state["ends"]["statename"] == state["dies"]["statename"] == "EXITED"
    (mail,) = [path.read_text() for path in mails.glob("mail-*")]
    assert "To: ops@example.com" in mail and "Subject:  dies crashed at" in mail
    assert "Process dies in group dies exited unexpectedly (pid " in mail and "from state RUNNING" in mail


HOG = "import time; hog = b'x' * (120 << 20); time.sleep(600)"


def test_memmon_restarts_the_program_over_its_limit_and_leaves_its_neighbour(run, tmp_path):
    sock = run(f"""
        [program:hog]
        command={PY} -c "{HOG}"
        startsecs=0

        [program:neighbour]
        command={PY} -c "import time; time.sleep(600)"
        startsecs=0

        [eventlistener:memmon]
        command={PY} -m superlance.memmon -p hog=60MB
        events=TICK_5
    """)
    server = rpc(sock)

    def pids() -> dict[str, int]:
        return {p["name"]: p["pid"] for p in server.supervisor.getAllProcessInfo()}

    first = wait_until(lambda: (found := pids()) and found["hog"] and found["neighbour"] and found,
                       what="both running")
    wait_until(lambda: pids()["hog"] not in (0, first["hog"]), timeout=20, what="hog restarted by memmon")
    assert pids()["neighbour"] == first["neighbour"]
