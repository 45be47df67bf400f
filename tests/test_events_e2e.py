"""Event listeners end to end: a real master, the tests' own listener (tests/apps/event_recorder.py,
which speaks the protocol by hand), every event type it can meet, a rejected event, a listener
that stops reading, and a pool of two."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, wait_until

supervisor_xmlrpc = pytest.importorskip("supervisor.xmlrpc")

RECORDER = APPS / "event_recorder.py"
PY = sys.executable


def records(path: Path) -> list[dict[str, Any]]:
    """The events the recorder wrote; a line it is still writing is not one yet."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def names(path: Path) -> list[str]:
    return [r["headers"]["eventname"] for r in records(path)]


def fields(payload: str) -> dict[str, str]:
    """`key:value key:value` of a payload's first line."""
    return dict(item.split(":", 1) for item in payload.split("\n", 1)[0].split())


def rpc(sock: Path) -> Any:
    """Supervisor's own client library, as listeners use it (childutils.getRPCInterface)."""
    transport = supervisor_xmlrpc.SupervisorTransport("", "", f"unix://{sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def write_conf(tmp_path: Path, body: str) -> tuple[Path, Path]:
    sock = tmp_path / "control.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [supervisord]

        [unix_http_server]
        file={sock}
    """) + textwrap.dedent(body))
    return conf, sock


TALKER = ("import sys, time; print('hello out'); sys.stderr.write('hello err\\\\n'); sys.stderr.flush(); "
          "print('<!--XSUPERVISOR:BEGIN-->a message<!--XSUPERVISOR:END-->'); time.sleep(600)")


def test_every_event_type_reaches_a_listener_with_supervisors_payloads(arbiter, tmp_path):
    out = tmp_path / "events.jsonl"
    conf, sock = write_conf(tmp_path, f"""
        [program:talker]
        command={PY} -u -c "{TALKER}"
        startsecs=0
        stdout_events_enabled=true
        stderr_events_enabled=true
        stdout_capture_maxbytes=1KB
        stdout_logfile={tmp_path}/talker.log

        [program:quitter]
        command=sh -c "sleep 0.3; exit 3"
        startsecs=0
        autorestart=false

        [program:crasher]
        command=sh -c "exit 1"
        startsecs=1
        startretries=1

        [eventlistener:rec]
        command={PY} {RECORDER} {out} --reject REMOTE_COMMUNICATION
        events=EVENT,ARBITER
        buffer_size=200
    """)
    master = arbiter(["-c", str(conf), "wsgi_app:app", "-w", "1", "--timeout", "2"], control=False)
    master.wait_ready(1)
    wait_until(lambda: "PROCESS_STATE_FATAL" in names(out) and "PROCESS_STATE_EXITED" in names(out),
               timeout=20, what="FATAL and EXITED events")
    server = rpc(sock)
    assert server.supervisor.sendRemoteCommEvent("mytype", "some data") is True
    wait_until(lambda: "REMOTE_COMMUNICATION" in names(out), what="the remote event, sent again")
    server.supervisor.stopProcess("talker")
    wait_until(lambda: "PROCESS_STATE_STOPPED" in names(out), what="STOPPED")
    # A group added and removed (supervisorctl reread/add/remove).
    conf.write_text(conf.read_text() + "\n[program:extra]\ncommand=sleep 600\nstartsecs=0\n")
    server.supervisor.reloadConfig()
    server.supervisor.addProcessGroup("extra")
    wait_until(lambda: any(r["payload"] == "groupname:extra\n" for r in records(out)), what="group added")
    server.supervisor.stopProcess("extra")
    server.supervisor.removeProcessGroup("extra")
    wait_until(lambda: "PROCESS_GROUP_REMOVED" in names(out), what="group removed")
    # The web side: a reload (HUP), then a worker that hangs past --timeout.
    master.signal(signal.SIGHUP)
    wait_until(lambda: "ARBITER_RELOAD_FINISHED" in names(out), timeout=20, what="reload finished")
    with socket.create_connection(("127.0.0.1", master.port)) as hang:
        hang.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: "ARBITER_WORKER_TIMEOUT" in names(out), timeout=20, what="worker timeout")
    wait_until(lambda: "TICK_5" in names(out), timeout=8, what="TICK_5")
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0
    got = records(out)
    seen = [r["headers"]["eventname"] for r in got]

    # The envelope: Supervisor's header fields; serials rise by one per event (this listener's
    # pool is the only one), poolserials too; `len` is the payload's length.
    for r in got:
        h = r["headers"]
        assert set(h) == {"ver", "server", "serial", "pool", "poolserial", "eventname", "len"}
        assert (h["ver"], h["server"], h["pool"]) == ("3.0", "supervisor", "rec")
        assert int(h["len"]) == len(r["payload"])
    handled = [r for r in got if r["answer"] == "OK"]
    assert [int(r["headers"]["serial"]) for r in handled] == list(range(len(handled)))
    assert [int(r["headers"]["poolserial"]) for r in handled] == list(range(len(handled)))

    # The rejected event came again with the same serials, and was then processed.
    remote = [r for r in got if r["headers"]["eventname"] == "REMOTE_COMMUNICATION"]
    assert [r["answer"] for r in remote] == ["FAIL", "OK"]
    assert remote[0]["headers"] == remote[1]["headers"]
    assert remote[0]["payload"] == "type:mytype\nsome data"

    def first(name: str, **want: str) -> dict[str, str]:
        for r in got:
            if r["headers"]["eventname"] == name:
                found = fields(r["payload"])
                if all(found.get(k) == v for k, v in want.items()):
                    return found
        raise AssertionError(f"no {name} with {want} in {seen}")

    assert seen[0] == "SUPERVISOR_STATE_CHANGE_RUNNING" and "SUPERVISOR_STATE_CHANGE_STOPPING" in seen
    assert got[0]["payload"] == got[seen.index("SUPERVISOR_STATE_CHANGE_STOPPING")]["payload"] == ""
    assert {"rec", "talker", "quitter", "crasher", "extra"} <= {
        r["payload"].strip().partition(":")[2] for r in got if r["headers"]["eventname"] == "PROCESS_GROUP_ADDED"}
    # PROCESS_STATE_*: Supervisor's fields for each state.
    starting = first("PROCESS_STATE_STARTING", processname="talker")
    assert starting == {"processname": "talker", "groupname": "talker", "from_state": "STOPPED", "tries": "0"}
    running = first("PROCESS_STATE_RUNNING", processname="talker")
    assert running["from_state"] == "STARTING" and int(running["pid"]) > 0
    exited = first("PROCESS_STATE_EXITED", processname="quitter")
    assert exited["from_state"] == "RUNNING" and exited["expected"] == "0" and int(exited["pid"]) > 0
    assert first("PROCESS_STATE_BACKOFF", processname="crasher") == {
        "processname": "crasher", "groupname": "crasher", "from_state": "STARTING", "tries": "1"}
    assert first("PROCESS_STATE_STARTING", processname="crasher", from_state="BACKOFF")["tries"] == "1"
    assert first("PROCESS_STATE_FATAL", processname="crasher")["from_state"] == "BACKOFF"
    stopping = first("PROCESS_STATE_STOPPING", processname="talker")
    assert stopping["from_state"] == "RUNNING" and stopping["pid"] == running["pid"]
    stopped = first("PROCESS_STATE_STOPPED", processname="talker")
    assert stopped["from_state"] == "STOPPING" and stopped["pid"] == running["pid"]
    # Output: log events per chunk, and the capture-mode message as one event, not logged.
    logged_out = "".join(r["payload"].split("\n", 1)[1] for r in got
                         if r["headers"]["eventname"] == "PROCESS_LOG_STDOUT")
    assert logged_out.startswith("hello out\n") and "XSUPERVISOR" not in logged_out
    assert first("PROCESS_LOG_STDOUT") == {"processname": "talker", "groupname": "talker",
                                            "pid": running["pid"], "channel": "stdout"}
    assert any(r["payload"].endswith("\nhello err\n") for r in got if r["headers"]["eventname"] == "PROCESS_LOG_STDERR")
    comm = [r for r in got if r["headers"]["eventname"] == "PROCESS_COMMUNICATION_STDOUT"]
    assert [r["payload"] for r in comm] == [f"processname:talker groupname:talker pid:{running['pid']}\na message"]
    assert (tmp_path / "talker.log").read_text() == "hello out\n\n"
    assert int(first("TICK_5")["when"]) % 5 == 0
    # Arbiter's own events.
    booted = first("ARBITER_WORKER_BOOTED")
    assert set(booted) == {"pid", "generation"}
    assert first("ARBITER_RELOAD_STARTED") == {"generation": "2"}
    assert first("ARBITER_RELOAD_FINISHED") == {"generation": "2", "workers": "1"}
    assert first("ARBITER_WORKER_EXITED", expected="1")["generation"] == "1"
    assert set(first("ARBITER_WORKER_TIMEOUT")) == {"pid", "generation", "booting"}
    # Every child was told where the control API is.
    assert {r["server_url"] for r in got} == {f"unix://{sock}"}
    assert {(r["enabled"], r["group"], r["listener"]) for r in got} == {("1", "rec", "rec")}


CHATTY = ("import sys, time; [(sys.stdout.write('x' * 200000 + chr(10)), time.sleep(0.05)) for _ in range(40)]; "
          "print('last'); time.sleep(600)")


def test_a_listener_that_stops_reading_costs_its_buffer_not_the_master(arbiter, tmp_path):
    """A stalled listener holds one event and its pool drops its oldest events (logged); the
    master keeps serving, and a second pool subscribed to the same events gets every one."""
    slow, fast = tmp_path / "slow.jsonl", tmp_path / "fast.jsonl"
    conf, sock = write_conf(tmp_path, f"""
        [program:chatty]
        ; 40 bursts of 200 KB (each more than a pipe holds), then one line, then quiet
        command={PY} -u -c "{CHATTY}"
        autostart=false
        startsecs=0
        stdout_events_enabled=true
        stdout_logfile={tmp_path}/chatty.log

        [eventlistener:slow]
        command={PY} {RECORDER} {slow} --stall-after 1
        events=PROCESS_LOG
        buffer_size=3

        [eventlistener:fast]
        command={PY} {RECORDER} {fast}
        events=PROCESS_LOG
        ; room for every chunk of the 8 MB even if this listener falls behind on a loaded machine
        buffer_size=10000
    """)
    master = arbiter(["-c", str(conf), "wsgi_app:app", "-w", "1"], control=False)
    master.wait_ready(1)
    server = rpc(sock)
    wait_until(lambda: all(p["statename"] == "RUNNING" for p in server.supervisor.getAllProcessInfo()
                           if p["name"] != "chatty"), what="listeners running")
    server.supervisor.startProcess("chatty")
    started = time.monotonic()
    # `print` under -u writes "last" and "\n" apart: a loaded machine may read them in two events.
    while not "".join(r["payload"].split("\n", 1)[1] for r in records(fast)).endswith("\nlast\n"):
        assert time.monotonic() - started < 60, "the fast listener did not get every event"
        # A master blocked on the stalled listener's pipe would answer neither (5 s timeouts).
        assert master.get("/")[0] == 200
        server.supervisor.getState()
    got = "".join(r["payload"].split("\n", 1)[1] for r in records(fast))
    assert got == ("x" * 200000 + "\n") * 40 + "last\n"  # every byte, in order, none twice
    assert len(records(slow)) == 1
    master.wait_log(r"pool slow event buffer overflowed, discarding event \d+", timeout=5)
    assert (tmp_path / "chatty.log").read_text() == got


def test_a_pool_of_two_shares_events_each_once(arbiter, tmp_path):
    out = tmp_path / "pair.jsonl"
    conf, sock = write_conf(tmp_path, f"""
        [eventlistener:pair]
        command={PY} {RECORDER} {out} --delay 0.3
        process_name=%(program_name)s_%(process_num)d
        numprocs=2
        events=REMOTE_COMMUNICATION
        startsecs=0
    """)
    master = arbiter(["-c", str(conf)], bind=False, control=False)
    wait_until(sock.exists, what="the control socket")
    server = rpc(sock)
    wait_until(lambda: [p["statename"] for p in server.supervisor.getAllProcessInfo()] == ["RUNNING"] * 2,
               what="both listeners running")
    for number in range(8):
        server.supervisor.sendRemoteCommEvent("burst", str(number))
    wait_until(lambda: len(records(out)) == 8, timeout=20, what="8 events handled")
    got = records(out)
    assert sorted(r["payload"] for r in got) == sorted(f"type:burst\n{n}" for n in range(8))
    assert sorted(int(r["headers"]["poolserial"]) for r in got) == list(range(8))
    assert {r["listener"] for r in got} == {"pair_0", "pair_1"}
    assert {r["headers"]["pool"] for r in got} == {"pair"}
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0


CALLER = ("import os, sys; from supervisor import childutils; "
          "childutils.getRPCInterface(os.environ).supervisor.sendRemoteCommEvent('from', str(os.getuid())); "
          "import time; time.sleep(600)")


def _python_for_nobody() -> str | None:
    """An interpreter `nobody` may run: ours unless it lives in a private home (pyenv in /root)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        path = Path(candidate)
        if path.exists() and all(os.stat(p).st_mode & 0o001 for p in path.resolve().parents):
            return candidate
    return None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run a program as nobody")
@pytest.mark.parametrize("how", ["unix-chown", "tcp-basic"])
def test_a_program_running_as_another_user_calls_back_with_supervisors_client(arbiter, how):
    """SUPERVISOR_SERVER_URL (and, over TCP, SUPERVISOR_USERNAME/PASSWORD) are all a program
    run as `nobody` needs to call the master with Supervisor's own client library."""
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter that nobody may run")
    shared = Path(tempfile.mkdtemp(prefix="arbiter-events-"))
    try:
        os.chmod(shared, 0o755)  # nobody runs Supervisor's client library from a copy in here
        shutil.copytree(Path(supervisor_xmlrpc.__file__).parent, shared / "supervisor")
        out = shared / "events.jsonl"
        server_conf = (f"[unix_http_server]\nfile={shared}/control.sock\nchmod=0700\nchown=nobody\n"
                       if how == "unix-chown" else
                       "[inet_http_server]\nport=127.0.0.1:0\nusername=watcher\npassword=s3cret\n")
        conf = shared / "supervisord.conf"
        conf.write_text("[supervisord]\n" + server_conf + textwrap.dedent(f"""
            [program:caller]
            command={python} -c "{CALLER}"
            environment=PYTHONPATH="{shared}"
            user=nobody
            startsecs=0
            autorestart=false

            [eventlistener:rec]
            command={PY} {RECORDER} {out}
            events=REMOTE_COMMUNICATION
            startsecs=0
        """))
        if how == "tcp-basic":  # TCP only: no unix socket, which children would be pointed at first
            master = arbiter(["-c", str(conf), "--control-socket", "none"], bind=False)
        else:
            master = arbiter(["-c", str(conf)], bind=False, control=False)
        wait_until(lambda: records(out), timeout=20, what="the event the program sent")
        (got,) = records(out)
        assert got["payload"] == f"type:from\n{pwd.getpwnam('nobody').pw_uid}"
        url = got["server_url"]
        assert url == (f"unix://{shared}/control.sock" if how == "unix-chown" else url)
        assert url.startswith("unix://" if how == "unix-chown" else "http://127.0.0.1:")
        master.signal(signal.SIGTERM)
        assert master.wait_exit(30) == 0
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_failed_reload_is_an_event_with_its_reason(arbiter, tmp_path):
    app_dir = tmp_path / "deploy"
    app_dir.mkdir()
    module = app_dir / "deployed_app.py"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n")
    out = tmp_path / "reloads.jsonl"
    conf = tmp_path / "arbiter.toml"
    conf.write_text(textwrap.dedent(f"""\
        [eventlisteners.rec]
        command = ["{PY}", "{RECORDER}", "{out}"]
        events = ["ARBITER_RELOAD"]
        startsecs = 0
    """))
    master = arbiter(["-c", str(conf), "deployed_app:app", "-w", "1", "--chdir", str(app_dir)])
    master.wait_ready(1)
    module.write_text("raise ImportError('a broken deploy')\n")
    master.signal(signal.SIGHUP)
    wait_until(lambda: "ARBITER_RELOAD_FAILED" in names(out), timeout=20, what="the failed reload")
    assert [(r["headers"]["eventname"], r["payload"]) for r in records(out)] == [
        ("ARBITER_RELOAD_STARTED", "generation:2"),
        ("ARBITER_RELOAD_FAILED", "generation:2\nApp failed to load."),
    ]
    assert master.get("/") == (200, b"ok")
