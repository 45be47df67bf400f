"""`/RPC2`: Supervisor's XML-RPC API (version 3.0), so supervisorctl and tools built on it work.

Requests are parsed with `xmlrpc.client.loads` (data only, nothing is evaluated) and dispatched
through the fixed table `XmlRpc.methods`. A method returns its value, or a `Later` naming the
command the master must run and how to turn the master's reply into the method's value. Faults
carry Supervisor's numbers (supervisor/xmlrpc.py `Faults`), mapped from our error codes.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import re
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arbiter.control import commands
from arbiter.control.backend import ERROR_CODES, Backend, ControlError
from arbiter.control.connection import HttpConnection, Request
from arbiter.control.logs import Source, read_range, tail
from arbiter.control.names import Program, find_one, namespec, select

API_VERSION = "3.0"
UNKNOWN_METHOD, INCORRECT_PARAMETERS, FAILED, SUCCESS = 1, 2, 30, 80
STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40,
               "EXITED": 100, "FATAL": 200, "UNKNOWN": 1000}
RUNNING_STATES = {"RUNNING", "BACKOFF", "STARTING"}
SIGNALLABLE_STATES = {"RUNNING", "STARTING", "STOPPING"}
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_INT_MAX = 2**31 - 1


@dataclass
class Later:
    command: str
    args: dict[str, Any]
    convert: Callable[[Any], Any] = lambda reply: True


def _fault(error: ControlError) -> xmlrpc.client.Fault:
    return xmlrpc.client.Fault(error.fault_code, f"{_fault_name(error)}: {error.message}")


def _fault_name(error: ControlError) -> str:
    return {"SHUTTING_DOWN": "SHUTDOWN_STATE", "RELOAD_FAILED": "FAILED", "INTERNAL": "FAILED"}.get(error.code, error.code)


def _clean(value: Any) -> Any:
    """Make a value XML-RPC can carry: no None, 32-bit ints, only characters XML allows."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return max(-_INT_MAX - 1, min(value, _INT_MAX))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return _XML_INVALID.sub("\ufffd", value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def process_info(p: Program, now: float) -> dict[str, Any]:
    """A program's status as Supervisor's `getProcessInfo` struct."""
    state = str(p.get("state") or "UNKNOWN")
    start, stop = int(p.get("start") or 0), int(p.get("stop") or 0)
    description = p.get("description")
    if not description:
        if state == "RUNNING":
            description = f"pid {p.get('pid')}, uptime {datetime.timedelta(seconds=int(max(now - start, 0)))}"
        elif state in ("FATAL", "BACKOFF"):
            description = p.get("spawnerr") or f'unknown error (try "tail {p.get("name")}")'
        elif state in ("STOPPED", "EXITED"):
            description = time.strftime("%b %d %I:%M %p", time.localtime(stop)) if start else "Not started"
    return {"name": p.get("name"), "group": p.get("group") or p.get("name"), "start": start, "stop": stop,
            "now": int(p.get("now") or now), "state": int(p.get("statecode", STATE_CODES.get(state, 1000))),
            "statename": state, "spawnerr": p.get("spawnerr") or "", "exitstatus": int(p.get("exitstatus") or 0),
            "logfile": p.get("stdout_logfile") or "", "stdout_logfile": p.get("stdout_logfile") or "",
            "stderr_logfile": p.get("stderr_logfile") or "", "pid": int(p.get("pid") or 0),
            "description": description or ""}


def supervisor_results(reply: Any, matched: list[Program]) -> list[dict[str, Any]]:
    """Per-process results with Supervisor's numeric status (80 = SUCCESS)."""
    out = []
    for r in commands.process_results(reply, matched):
        code = SUCCESS if r["status"] == "OK" else ERROR_CODES.get(r["status"], (0, FAILED))[1]
        out.append({"name": r["name"], "group": r["group"], "status": code, "description": r["description"]})
    return out


def _single(matched: list[Program]) -> Callable[[Any], bool]:
    def convert(reply: Any) -> bool:
        for r in commands.process_results(reply, matched):
            if r["status"] != "OK":
                raise ControlError(r["status"], r["description"])
        return True
    return convert


class XmlRpc:
    def __init__(self, backend: Backend, log: logging.Logger) -> None:
        self.backend, self.log = backend, log
        s = "supervisor."
        self.methods: dict[str, tuple[Callable[..., Any], list[str]]] = {
            s + "getAPIVersion": (self.getAPIVersion, ["string"]),
            s + "getVersion": (self.getAPIVersion, ["string"]),  # supervisorctl's upcheck uses it
            s + "getSupervisorVersion": (self.getSupervisorVersion, ["string"]),
            s + "getIdentification": (self.getIdentification, ["string"]),
            s + "getState": (self.getState, ["struct"]),
            s + "getPID": (self.getPID, ["int"]),
            s + "getAllProcessInfo": (self.getAllProcessInfo, ["array"]),
            s + "getProcessInfo": (self.getProcessInfo, ["struct", "string"]),
            s + "startProcess": (self.startProcess, ["boolean", "string", "boolean"]),
            s + "stopProcess": (self.stopProcess, ["boolean", "string", "boolean"]),
            s + "startProcessGroup": (self.startProcessGroup, ["array", "string", "boolean"]),
            s + "stopProcessGroup": (self.stopProcessGroup, ["array", "string", "boolean"]),
            s + "startAllProcesses": (self.startAllProcesses, ["array", "boolean"]),
            s + "stopAllProcesses": (self.stopAllProcesses, ["array", "boolean"]),
            s + "signalProcess": (self.signalProcess, ["boolean", "string", "string"]),
            s + "signalProcessGroup": (self.signalProcessGroup, ["array", "string", "string"]),
            s + "signalAllProcesses": (self.signalAllProcesses, ["array", "string"]),
            s + "readProcessStdoutLog": (self.readProcessStdoutLog, ["string", "string", "int", "int"]),
            s + "readProcessStderrLog": (self.readProcessStderrLog, ["string", "string", "int", "int"]),
            s + "tailProcessStdoutLog": (self.tailProcessStdoutLog, ["array", "string", "int", "int"]),
            s + "tailProcessStderrLog": (self.tailProcessStderrLog, ["array", "string", "int", "int"]),
            s + "clearProcessLogs": (self.clearProcessLogs, ["boolean", "string"]),
            s + "clearAllProcessLogs": (self.clearAllProcessLogs, ["array"]),
            s + "readLog": (self.readLog, ["string", "int", "int"]),
            s + "clearLog": (self.clearLog, ["boolean"]),
            s + "reloadConfig": (self.reloadConfig, ["array"]),
            s + "getAllConfigInfo": (self.getAllConfigInfo, ["array"]),  # supervisorctl's avail
            s + "addProcessGroup": (self.addProcessGroup, ["boolean", "string"]),
            s + "removeProcessGroup": (self.removeProcessGroup, ["boolean", "string"]),
            s + "shutdown": (self.shutdown, ["boolean"]),
            s + "restart": (self.restart, ["boolean"]),
            "system.listMethods": (self.listMethods, ["array"]),
            "system.methodHelp": (self.methodHelp, ["string", "string"]),
            "system.methodSignature": (self.methodSignature, ["array", "string"]),
            "system.multicall": (self.multicall, ["array", "array"]),
        }

    # -- transport --------------------------------------------------------------------------------

    def handle(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        try:
            args, method = xmlrpc.client.loads(request.body)
        except Exception as exc:  # expat and xmlrpc raise many kinds; all mean "not XML-RPC"
            self._respond(conn, xmlrpc.client.Fault(INCORRECT_PARAMETERS, f"INCORRECT_PARAMETERS: {exc}"))
            return
        self._call(conn, str(method), list(args), lambda result: self._respond(conn, result))

    def _respond(self, conn: HttpConnection, result: Any) -> None:
        if isinstance(result, xmlrpc.client.Fault):
            body = xmlrpc.client.dumps(result, methodresponse=True)
        else:
            body = xmlrpc.client.dumps((_clean(result),), methodresponse=True)
        conn.respond(200, body.encode("utf-8"), "text/xml; charset=utf-8")

    def _call(self, conn: HttpConnection, method: str, args: list[Any], done: Callable[[Any], None]) -> None:
        """Run one method; `done` receives its value or a Fault, now or when the master answers."""
        entry = self.methods.get(method)
        if entry is None:
            done(xmlrpc.client.Fault(UNKNOWN_METHOD, f"UNKNOWN_METHOD: {method}"))
            return
        function = entry[0]
        if function == self.multicall:
            if len(args) != 1:
                done(xmlrpc.client.Fault(INCORRECT_PARAMETERS, "INCORRECT_PARAMETERS: multicall takes one array"))
            else:
                self.multicall(conn, args[0], done)
            return
        try:
            inspect.signature(function).bind(*args)
        except TypeError as exc:
            done(xmlrpc.client.Fault(INCORRECT_PARAMETERS, f"INCORRECT_PARAMETERS: {exc}"))
            return
        try:
            result = function(*args)
        except ControlError as exc:
            done(_fault(exc))
            return
        except xmlrpc.client.Fault as fault:
            done(fault)
            return
        except Exception:
            self.log.exception("control: XML-RPC %s failed", method)
            done(xmlrpc.client.Fault(FAILED, "FAILED: internal error; see the master's log"))
            return
        if isinstance(result, Later):
            def converted(reply: Any) -> None:
                try:
                    value = result.convert(reply)
                except ControlError as exc:
                    value = _fault(exc)
                done(value)
            commands.submit(self.backend, conn, self.log, result.command, result.args, converted,
                            lambda error: done(_fault(error)))
        else:
            done(result)

    # -- system ---------------------------------------------------------------------------------

    def listMethods(self) -> list[str]:
        """Return an array listing the available method names."""
        return sorted(self.methods)

    def methodHelp(self, name: str) -> str:
        """Return a string showing the method's documentation."""
        if name not in self.methods:
            raise ControlError("BAD_NAME", name)
        return inspect.getdoc(self.methods[name][0]) or ""

    def methodSignature(self, name: str) -> list[list[str]]:
        """Return an array describing the method signature: [return type, param types...]."""
        if name not in self.methods:
            raise ControlError("BAD_NAME", name)
        return [self.methods[name][1]]

    def multicall(self, conn: HttpConnection, calls: Any, done: Callable[[Any], None]) -> None:
        """Process an array of calls ({"methodName", "params"}) and return an array of results:
        [value] for a success, a fault struct for a failure."""
        if not isinstance(calls, list):
            done(xmlrpc.client.Fault(INCORRECT_PARAMETERS, "INCORRECT_PARAMETERS: expected an array of calls"))
            return
        results: list[Any] = []

        def step() -> None:
            while len(results) < len(calls):
                index, call, sync = len(results), calls[len(results)], [True]

                def got(value: Any) -> None:
                    if isinstance(value, xmlrpc.client.Fault):
                        results.append({"faultCode": value.faultCode, "faultString": value.faultString})
                    else:
                        results.append([value])
                    if not sync[0]:
                        step()  # an answer that came turns later: carry on from there

                if not isinstance(call, dict) or call.get("methodName") == "system.multicall":
                    got(xmlrpc.client.Fault(INCORRECT_PARAMETERS, "INCORRECT_PARAMETERS: bad or recursive call"))
                    continue
                self._call(conn, str(call.get("methodName")), list(call.get("params") or []), got)
                sync[0] = False
                if len(results) == index:
                    return  # waiting on the master
            done(results)

        step()

    # -- supervisor: state ------------------------------------------------------------------------

    def _programs(self) -> list[Program]:
        return list(self.backend.status().get("programs", []))

    def getAPIVersion(self) -> str:
        """Return the version of the RPC API used by supervisord."""
        return API_VERSION

    def getSupervisorVersion(self) -> str:
        """Return the version of the server (arbiter's version)."""
        return str(self.backend.status().get("master", {}).get("version", ""))

    def getIdentification(self) -> str:
        """Return the identifying string of the server."""
        return "arbiter"

    def getState(self) -> dict[str, Any]:
        """Return the current state of the server as a struct {statecode, statename}."""
        running = self.backend.status().get("master", {}).get("state") == "RUNNING"
        return {"statecode": 1, "statename": "RUNNING"} if running else {"statecode": -1, "statename": "SHUTDOWN"}

    def getPID(self) -> int:
        """Return the PID of the master."""
        return int(self.backend.status().get("master", {}).get("pid") or 0)

    def getAllProcessInfo(self) -> list[dict[str, Any]]:
        """Get info about all processes."""
        now = time.time()
        return [process_info(p, now) for p in self._programs()]

    def getProcessInfo(self, name: str) -> dict[str, Any]:
        """Get info about the process named name ("name" or "group:name")."""
        return process_info(find_one(self._programs(), str(name)), time.time())

    # -- supervisor: control ----------------------------------------------------------------------

    def startProcess(self, name: str, wait: bool = True) -> Later:
        """Start a process ("name", "group:name" or "group:*"); wait for it to be RUNNING."""
        return Later("start", {"names": [name], "wait": bool(wait)}, _single(select(self._programs(), [name])))

    def stopProcess(self, name: str, wait: bool = True) -> Later:
        """Stop a process; wait for it to be stopped."""
        return Later("stop", {"names": [name], "wait": bool(wait)}, _single(select(self._programs(), [name])))

    def _group(self, command: str, spec: str, states: set[str], want: bool, extra: dict[str, Any]) -> Later:
        matched = [p for p in select(self._programs(), [spec]) if (p.get("state") in states) == want]
        wanted = {(p.get("group") or p.get("name"), p.get("name")) for p in matched}

        def convert(reply: Any) -> list[dict[str, Any]]:
            # Supervisor reports only the processes the predicate chose (stop all: the running).
            return [r for r in supervisor_results(reply, matched) if (r["group"], r["name"]) in wanted]
        return Later(command, {"names": [spec], **extra}, convert)

    def startProcessGroup(self, name: str, wait: bool = True) -> Later:
        """Start every process of group name that is not running; return per-process results."""
        return self._group("start", f"{name}:*", RUNNING_STATES, False, {"wait": bool(wait)})

    def stopProcessGroup(self, name: str, wait: bool = True) -> Later:
        """Stop every running process of group name; return per-process results."""
        return self._group("stop", f"{name}:*", RUNNING_STATES, True, {"wait": bool(wait)})

    def startAllProcesses(self, wait: bool = True) -> Later:
        """Start every process that is not running; return per-process results."""
        return self._group("start", "all", RUNNING_STATES, False, {"wait": bool(wait)})

    def stopAllProcesses(self, wait: bool = True) -> Later:
        """Stop every running process; return per-process results."""
        return self._group("stop", "all", RUNNING_STATES, True, {"wait": bool(wait)})

    def signalProcess(self, name: str, signal: str) -> Later:
        """Send a signal (name or number) to a process."""
        sig = commands.signal_name(signal)
        return Later("signal", {"names": [name], "signal": sig}, _single(select(self._programs(), [name])))

    def signalProcessGroup(self, name: str, signal: str) -> Later:
        """Send a signal to every signallable process of a group."""
        return self._group("signal", f"{name}:*", SIGNALLABLE_STATES, True, {"signal": commands.signal_name(signal)})

    def signalAllProcesses(self, signal: str) -> Later:
        """Send a signal to every signallable process."""
        return self._group("signal", "all", SIGNALLABLE_STATES, True, {"signal": commands.signal_name(signal)})

    # -- supervisor: logs -------------------------------------------------------------------------

    def _log_file(self, name: str, stream: str) -> Source:
        spec = "master" if name == "master" else namespec(find_one(self._programs(), str(name)))
        path = self.backend.log_path(spec, stream)
        if not path:
            memory = self.backend.log_memory(spec, stream)  # output through the master's stream
            if memory is not None:
                return memory
            raise ControlError("NO_FILE", f"{stream} of {name} is not captured")
        return path

    def readProcessStdoutLog(self, name: str, offset: int, length: int) -> str:
        """Read length bytes of name's stdout log from offset (negative offset: from the end)."""
        return read_range(self._log_file(name, "stdout"), int(offset), int(length)).data.decode("utf-8", "replace")

    def readProcessStderrLog(self, name: str, offset: int, length: int) -> str:
        """Read length bytes of name's stderr log from offset (negative offset: from the end)."""
        return read_range(self._log_file(name, "stderr"), int(offset), int(length)).data.decode("utf-8", "replace")

    def tailProcessStdoutLog(self, name: str, offset: int, length: int) -> list[Any]:
        """Return [string, next offset, overflow] of name's stdout log (Supervisor's tailFile)."""
        data, size, overflow = tail(self._log_file(name, "stdout"), int(offset), int(length))
        return [data.decode("utf-8", "replace"), size, overflow]

    def tailProcessStderrLog(self, name: str, offset: int, length: int) -> list[Any]:
        """Return [string, next offset, overflow] of name's stderr log (Supervisor's tailFile)."""
        data, size, overflow = tail(self._log_file(name, "stderr"), int(offset), int(length))
        return [data.decode("utf-8", "replace"), size, overflow]

    def clearProcessLogs(self, name: str) -> Later:
        """Truncate name's stdout and stderr logs."""
        matched = [find_one(self._programs(), str(name))]
        return Later("clear", {"names": [name], "streams": ["stdout", "stderr"]}, _single(matched))

    def clearAllProcessLogs(self) -> Later:
        """Truncate every process's logs; return per-process results."""
        matched = self._programs()
        return Later("clear", {"names": ["all"], "streams": ["stdout", "stderr"]},
                     lambda reply: supervisor_results(reply, matched))

    def readLog(self, offset: int, length: int) -> str:
        """Read length bytes of the master's log from offset (negative offset: from the end)."""
        return read_range(self._log_file("master", "stdout"), int(offset), int(length)).data.decode("utf-8", "replace")

    def clearLog(self) -> Later:
        """Truncate the master's log."""
        return Later("clear", {"names": ["master"], "streams": ["stdout"]})

    # -- supervisor: configuration and life -------------------------------------------------------

    def reloadConfig(self) -> Later:
        """Read the configuration again; return [[added, changed, removed]] group names."""
        def convert(reply: Any) -> list[list[list[str]]]:
            reply = reply if isinstance(reply, dict) else {}
            return [[list(reply.get("added", [])), list(reply.get("changed", [])), list(reply.get("removed", []))]]
        return Later("reread", {}, convert)

    def getAllConfigInfo(self) -> Later:
        """Configured processes: those in use, then groups a reread found (only the keys
        supervisorctl's avail reads: name, group, inuse, autostart, group_prio, process_prio)."""
        programs = self._programs()

        def convert(reply: Any) -> list[dict[str, Any]]:
            added = list(reply.get("added", [])) if isinstance(reply, dict) else []
            def entry(name: str, group: str, inuse: bool, p: Program) -> dict[str, Any]:
                priority = int(p.get("priority", 999))
                return {"name": name, "group": group, "inuse": inuse, "autostart": bool(p.get("autostart", True)),
                        "group_prio": priority, "process_prio": priority}
            return ([entry(str(p.get("name")), str(p.get("group") or p.get("name")), True, p) for p in programs]
                    + [entry(g, g, False, {}) for g in added])
        return Later("reread", {}, convert)

    def addProcessGroup(self, name: str) -> Later:
        """Start using the configured group name."""
        return Later("add", {"names": [str(name)]})

    def removeProcessGroup(self, name: str) -> Later:
        """Stop using group name (its processes must be stopped)."""
        return Later("remove", {"names": [str(name)]})

    def shutdown(self) -> Later:
        """Stop every process and the master."""
        return Later("shutdown", {})

    def restart(self) -> Later:
        """Reload: Supervisor restarts itself; arbiter does a rolling reload of its workers."""
        return Later("reload", {"wait": False})
