"""The in-place upgrade keeps every program running: same pids, states and uptimes, every line
they print before, during and after it in their logs, in order, none twice; event listeners
still fed, with serials that go on."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS, wait_until

supervisor_xmlrpc = pytest.importorskip("supervisor.xmlrpc")
PY = sys.executable
# Counts as fast as a busy program logs, on stdout or stderr.
TICKER = ("import itertools, sys, time\n"
          "for i in itertools.count(): print(i, file=sys.{0}, flush=True); time.sleep(0.002)")


def rpc(sock: Path) -> Any:
    transport = supervisor_xmlrpc.SupervisorTransport("", "", f"unix://{sock}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def whole_lines(path: Path) -> list[str]:
    """The whole lines of `path` (the last may still be being written)."""
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def numbers(path: Path) -> list[int]:
    return [int(line) for line in whole_lines(path)]


@pytest.mark.parametrize("how", ["usr2", "hup-preload"])
def test_an_upgrade_keeps_programs_their_pids_logs_and_listeners(arbiter, tmp_path, how):
    sock = tmp_path / "control.sock"
    events = tmp_path / "events.jsonl"
    conf = tmp_path / "arbiter.toml"
    conf.write_text(textwrap.dedent(f"""\
        wsgi_app = "wsgi_app:app"
        workers = 2
        control_socket = "{sock}"
        pidfile = "{tmp_path}/arbiter.pid"

        [programs.out]
        command = ["{PY}", "-c", {json.dumps(TICKER.format("stdout"))}]
        startsecs = 0
        stdout_logfile = "{tmp_path}/out.log"

        [programs.err]
        command = ["{PY}", "-c", {json.dumps(TICKER.format("stderr"))}]
        startsecs = 0
        stderr_logfile = "{tmp_path}/err.log"

        [eventlisteners.rec]
        command = ["{PY}", "{APPS / 'event_recorder.py'}", "{events}", "--hold", "during:{tmp_path}/go"]
        events = ["REMOTE_COMMUNICATION"]
        buffer_size = 100
    """))
    master = arbiter(["-c", str(conf), *(["--preload"] if how == "hup-preload" else [])], control=False)
    master.wait_ready(2)
    server = rpc(sock)
    wait_until(lambda: {p["name"]: p["statename"] for p in server.supervisor.getAllProcessInfo()}
               == {"out": "RUNNING", "err": "RUNNING", "rec": "RUNNING"}, what="all running")
    server.supervisor.sendRemoteCommEvent("before", "1")
    wait_until(lambda: events.exists() and "before" in events.read_text(), what="the first event")
    before = {p["name"]: p for p in server.supervisor.getAllProcessInfo()}
    lines_before = len(numbers(tmp_path / "out.log"))

    # An event the listener is still handling (until the test says go) while the master execs:
    # the new image takes its answer.
    server.supervisor.sendRemoteCommEvent("during", "2")
    master.signal(signal.SIGHUP if how == "hup-preload" else signal.SIGUSR2)
    master.wait_log(r"Upgrade: handing over 3 programs, 1 events in flight to listeners and 0 buffered")
    master.wait_log(r"Upgraded in place \(pid \d+\): adopted 2 workers", timeout=30)
    (tmp_path / "go").touch()
    master.wait_log(r"adopted: 'out' with pid \d+, RUNNING")
    wait_until(sock.exists, what="the control socket again")
    master.wait_log(r"Reload done: generation 2", timeout=30)
    assert master.get("/")[0] == 200
    after = {p["name"]: p for p in rpc(sock).supervisor.getAllProcessInfo()}
    for name in ("out", "err", "rec"):
        assert (after[name]["pid"], after[name]["statename"], after[name]["start"]) == (
            before[name]["pid"], "RUNNING", before[name]["start"])
        assert after[name]["now"] - after[name]["start"] >= before[name]["now"] - before[name]["start"]
    # The listener goes on with the same process, and the serials go on from where they were.
    rpc(sock).supervisor.sendRemoteCommEvent("after", "3")
    wait_until(lambda: "after" in "".join(whole_lines(events)), timeout=15, what="an event after the upgrade")
    remote = [r for r in map(json.loads, whole_lines(events))
              if r["headers"]["eventname"] == "REMOTE_COMMUNICATION"]
    assert [r["payload"] for r in remote] == ["type:before\n1", "type:during\n2", "type:after\n3"]
    assert {r["pid"] for r in remote} == {before["rec"]["pid"]}
    assert [int(r["headers"]["serial"]) for r in remote] == [0, 1, 2]
    assert "UNKNOWN" not in master.log()
    # Every line, before, during and after the upgrade: 0, 1, 2, ... with no gap and none twice.
    upgraded = len(numbers(tmp_path / "err.log"))
    wait_until(lambda: len(numbers(tmp_path / "err.log")) > upgraded + 50, what="lines after the upgrade")
    for log in ("out.log", "err.log"):
        got = numbers(tmp_path / log)
        assert got == list(range(len(got))), f"{log}: a line lost or repeated"
    assert len(numbers(tmp_path / "out.log")) > lines_before + 50
    assert "stopped: out" not in master.log() and "spawned: 'out'" in master.log()
    assert master.log().count("spawned: 'out'") == 1
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0


def test_an_upgrade_whose_code_does_not_load_leaves_programs_alone(arbiter, tmp_path):
    app_dir = tmp_path / "deploy"
    app_dir.mkdir()
    module = app_dir / "fragile_app.py"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n")
    conf = tmp_path / "arbiter.toml"
    conf.write_text(textwrap.dedent("""\
        [programs.steady]
        command = ["sleep", "600"]
        startsecs = 0
    """))
    master = arbiter(["-c", str(conf), "fragile_app:app", "-w", "1", "--chdir", str(app_dir), "--preload"])
    master.wait_ready(1)
    pid = int(master.wait_log(r"spawned: 'steady' with pid (\d+)")[0].group(1))
    module.write_text("raise SyntaxError('half-written deploy')\n")
    master.signal(signal.SIGUSR2)
    master.wait_log(r"Upgrade refused: the new code does not load")
    assert master.get("/") == (200, b"ok")
    assert "Upgrading in place" not in master.log() and "stopped: steady" not in master.log()
    assert int(master.wait_log(r"spawned: 'steady' with pid (\d+)")[-1].group(1)) == pid
