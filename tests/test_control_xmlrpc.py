"""Supervisor's XML-RPC API on /RPC2: through xmlrpc.client, and through the real supervisorctl."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from arbiter.control.records import ProcessArgs

from control_helpers import ServerLoop, UnixConn, call, make_loop, served, wait_until  # noqa: F401

SUPERVISORCTL = shutil.which("supervisorctl")


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> UnixConn:  # type: ignore[override]
        return UnixConn(self.path)


def proxy(loop: ServerLoop) -> Any:
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=UnixTransport(loop.unix_path))


def fault(call_: Any, *args: Any) -> int:
    with pytest.raises(xmlrpc.client.Fault) as info:
        call_(*args)
    return info.value.faultCode


def test_state_and_info(served: ServerLoop) -> None:
    s = proxy(served).supervisor
    assert s.getAPIVersion() == "3.0" and s.getVersion() == "3.0"
    assert s.getSupervisorVersion() == "0.1.0" and s.getIdentification() == "arbiter"
    assert s.getState() == {"statecode": 1, "statename": "RUNNING"}
    assert s.getPID() == os.getpid()
    infos = s.getAllProcessInfo()
    assert [(i["group"], i["name"], i["statename"], i["state"]) for i in infos] == [
        ("ticker", "ticker", "RUNNING", 20), ("pool", "pool_0", "RUNNING", 20), ("pool", "pool_1", "RUNNING", 20),
        ("idle", "idle", "STOPPED", 0), ("broken", "broken", "STOPPED", 0)]
    assert infos[1]["description"].startswith("pid 4000001, uptime 0:00:0")
    assert infos[3]["description"] == "Not started"
    info = s.getProcessInfo("pool:pool_1")
    assert info["pid"] == 4000002 and info["stdout_logfile"].endswith("pool_1.stdout.log")
    assert fault(s.getProcessInfo, "nope") == 10
    assert fault(s.getProcessInfo, "pool") == 10  # a group of two is not one process
    served.backend.master["state"] = "STOPPING"
    assert s.getState() == {"statecode": -1, "statename": "SHUTDOWN"}


def test_process_control_and_faults(served: ServerLoop) -> None:
    s, backend = proxy(served).supervisor, served.backend
    assert s.stopProcess("ticker") is True
    assert s.getProcessInfo("ticker")["statename"] == "STOPPED"  # wait=True: done when answered
    assert fault(s.stopProcess, "ticker") == 70        # NOT_RUNNING
    assert s.startProcess("ticker", False) is True
    assert backend.commands[-1].args == ProcessArgs(("ticker",), wait=False)
    wait_until(lambda: s.getProcessInfo("ticker")["statename"] == "RUNNING")
    assert fault(s.startProcess, "ticker") == 60       # ALREADY_STARTED
    assert fault(s.startProcess, "broken") == 50       # SPAWN_ERROR
    assert fault(s.startProcess, "ghost") == 10        # BAD_NAME
    results = s.stopProcessGroup("pool")
    assert [(r["name"], r["status"]) for r in results] == [("pool_0", 80), ("pool_1", 80)]
    assert fault(s.stopProcessGroup, "ghost") == 10
    results = s.startProcessGroup("pool")
    assert {r["status"] for r in results} == {80}
    results = s.stopAllProcesses()
    assert {r["name"] for r in results} == {"ticker", "pool_0", "pool_1"}
    results = s.startAllProcesses()
    assert {(r["name"], r["status"]) for r in results} >= {("broken", 50), ("idle", 80)}
    assert s.signalProcess("idle", "HUP") is True and backend.signals[-1] == ("idle", "HUP")
    assert fault(s.signalProcess, "idle", "NOSUCH") == 11  # BAD_SIGNAL
    assert {r["status"] for r in s.signalProcessGroup("pool", "USR1")} == {80}
    assert [r["name"] for r in s.signalAllProcesses("15")] == ["ticker", "pool_0", "pool_1", "idle"]
    assert fault(s.getPID, "extra-argument") == 2        # INCORRECT_PARAMETERS
    assert fault(proxy(served).supervisor.noSuchMethod) == 1  # UNKNOWN_METHOD


def test_logs(served: ServerLoop) -> None:
    s, backend = proxy(served).supervisor, served.backend
    Path(backend.programs[0]["stdout_logfile"]).write_bytes(b"0123456789\x00\x1b[31mred\n")
    assert s.readProcessStdoutLog("ticker", 0, 4) == "0123"
    assert s.readProcessStdoutLog("ticker", -4, 0) == "red\n"
    assert "\ufffd" in s.readProcessStdoutLog("ticker", 0, 0)  # control bytes made XML-safe
    assert fault(s.readProcessStdoutLog, "ticker", -4, 2) == 3   # BAD_ARGUMENTS
    assert fault(s.readProcessStdoutLog, "ghost", 0, 0) == 10
    assert s.readProcessStderrLog("ticker", 0, 0) == "ticker stderr line 1\n"
    assert s.tailProcessStdoutLog("ticker", 0, 5) == ["mred\n", 20, True]  # the last 5 of 20 bytes
    assert s.tailProcessStderrLog("ticker", 0, 100) == ["ticker stderr line 1\n", 21, False]
    assert s.readLog(0, 0) == "master started\n"
    assert s.clearProcessLogs("ticker") is True
    assert Path(backend.programs[0]["stdout_logfile"]).read_bytes() == b""
    assert {r["status"] for r in s.clearAllProcessLogs()} == {80}
    assert s.clearLog() is True and s.readLog(0, 0) == ""
    os.unlink(backend.programs[1]["stdout_logfile"])
    assert fault(s.readProcessStdoutLog, "pool:pool_0", 0, 0) == 20  # NO_FILE


def test_configuration_and_life(served: ServerLoop) -> None:
    s, backend = proxy(served).supervisor, served.backend
    assert s.reloadConfig() == [[["extra"], [], []]]
    avail = s.getAllConfigInfo()
    assert [(a["name"], a["inuse"]) for a in avail][-2:] == [("broken", True), ("extra", False)]
    assert s.addProcessGroup("extra") is True
    assert fault(s.addProcessGroup, "extra") == 90      # ALREADY_ADDED
    assert fault(s.removeProcessGroup, "ticker") == 91  # STILL_RUNNING
    assert s.removeProcessGroup("extra") is True
    assert s.restart() is True and backend.commands[-1].name == "reload"
    assert s.shutdown() is True and backend.master["state"] == "STOPPING"


def test_system_methods_and_multicall(served: ServerLoop) -> None:
    p = proxy(served)
    methods = p.system.listMethods()
    assert "supervisor.startProcess" in methods and "system.multicall" in methods
    assert "Start a process" in p.system.methodHelp("supervisor.startProcess")
    assert p.system.methodSignature("supervisor.startProcess") == [["boolean", "string", "boolean"]]
    results = p.system.multicall([
        {"methodName": "supervisor.getAPIVersion", "params": []},
        {"methodName": "supervisor.stopProcess", "params": ["ticker"]},  # answered turns later
        {"methodName": "supervisor.stopProcess", "params": ["ticker"]},
        {"methodName": "system.multicall", "params": [[]]},
        {"methodName": "supervisor.getProcessInfo", "params": ["ticker"]},
    ])
    assert results[:2] == [["3.0"], [True]]
    assert results[2]["faultCode"] == 70 and results[3]["faultCode"] == 2
    assert results[4][0]["statename"] == "STOPPED"
    status, _, body = call(served.unix_path, "POST", "/RPC2", raw=b"<not-xml")
    assert status == 200 and b"<fault>" in body
    assert call(served.unix_path, "GET", "/RPC2")[0] == 405


# -- the real supervisorctl ------------------------------------------------------------------------

pytestmark_supervisorctl = pytest.mark.skipif(SUPERVISORCTL is None, reason="supervisorctl not installed "
                                              "(pip install supervisor)")


def supervisorctl(loop: ServerLoop, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    conf = Path(loop.unix_path).parent / "supervisorctl.conf"
    conf.write_text(f"[supervisorctl]\nserverurl=unix://%(here)s/{Path(loop.unix_path).name}\n")
    return subprocess.run([SUPERVISORCTL, "-c", str(conf), *args], capture_output=True, text=True,  # type: ignore[list-item]
                          timeout=timeout)


@pytestmark_supervisorctl
def test_supervisorctl_status_start_stop_restart(served: ServerLoop) -> None:
    result = supervisorctl(served, "status")
    lines = result.stdout.splitlines()
    assert result.returncode == 3  # idle and broken are stopped
    assert lines[0].split()[:3] == ["ticker", "RUNNING", "pid"] and lines[3].split() == ["idle", "STOPPED", "Not", "started"]
    assert supervisorctl(served, "status", "ticker", "pool:*").returncode == 0
    result = supervisorctl(served, "status", "ghost")
    assert result.returncode == 4 and "ghost: ERROR (no such process)" in result.stdout
    result = supervisorctl(served, "stop", "ticker")
    assert (result.returncode, result.stdout) == (0, "ticker: stopped\n")
    assert supervisorctl(served, "status", "ticker").stdout.split()[1] == "STOPPED"
    result = supervisorctl(served, "start", "ticker", "broken")
    assert result.stdout == "ticker: started\nbroken: ERROR (spawn error)\n" and result.returncode == 7
    result = supervisorctl(served, "restart", "pool:*")
    assert result.stdout.splitlines() == ["pool:pool_0: stopped", "pool:pool_1: stopped",
                                          "pool:pool_0: started", "pool:pool_1: started"]
    result = supervisorctl(served, "signal", "HUP", "ticker")
    assert result.stdout == "ticker: signalled\n" and served.backend.signals[-1] == ("ticker", "HUP")
    assert supervisorctl(served, "pid").stdout.strip() == str(os.getpid())
    assert supervisorctl(served, "version").stdout.strip() == "0.1.0"


@pytestmark_supervisorctl
def test_supervisorctl_tail_update_and_avail(served: ServerLoop) -> None:
    result = supervisorctl(served, "tail", "ticker")
    assert result.returncode == 0 and "ticker stdout line 1" in result.stdout
    assert "pool_1 stderr line 1" in supervisorctl(served, "tail", "pool:pool_1", "stderr").stdout
    assert "master started" in supervisorctl(served, "maintail").stdout
    result = supervisorctl(served, "avail")
    assert result.stdout.splitlines()[-1].split()[:2] == ["extra", "avail"]
    result = supervisorctl(served, "update")
    assert result.returncode == 0 and result.stdout == "extra: added process group\n"
    assert "extra" in supervisorctl(served, "status").stdout
    assert supervisorctl(served, "clear", "ticker").stdout == "ticker: cleared\n"


@pytestmark_supervisorctl
def test_supervisorctl_tail_f(served: ServerLoop) -> None:
    conf = Path(served.unix_path).parent / "supervisorctl.conf"
    supervisorctl(served, "version")  # writes the config file
    proc = subprocess.Popen([SUPERVISORCTL, "-c", str(conf), "tail", "-f", "ticker"],  # type: ignore[list-item]
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
        seen = bytearray()

        def has(needle: bytes) -> bool:
            seen.extend(proc.stdout.read() or b"")  # type: ignore[union-attr]
            return needle in seen
        wait_until(lambda: has(b"ticker stdout line 1"), what="the tail")
        with open(served.backend.programs[0]["stdout_logfile"], "ab") as f:
            f.write(b"followed by supervisorctl\n")
        wait_until(lambda: has(b"followed by supervisorctl"), what="the appended line")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
