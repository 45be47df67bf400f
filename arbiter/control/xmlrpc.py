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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.control import commands
from arbiter.control.backend import ERROR_CODES, Backend, ControlError
from arbiter.control.connection import HttpConnection, Request
from arbiter.control.logs import Source, read_range, tail
from arbiter.control.names import Program, find_one, namespec, select
from arbiter.control.records import (
    RUNNING_STATES,
    ClearArgs,
    CommandArgs,
    GroupArgs,
    NoArgs,
    ProcessArgs,
    ReloadArgs,
    RemoteEventArgs,
    SignalArgs,
)
from arbiter.programs.states import ProcessStates

API_VERSION = "3.0"
UNKNOWN_METHOD, INCORRECT_PARAMETERS, FAILED, SUCCESS = 1, 2, 30, 80
SIGNALLABLE_STATES = frozenset({ProcessStates.RUNNING, ProcessStates.STARTING, ProcessStates.STOPPING})
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_INT_MAX = 2**31 - 1


@dataclass
class Later:
    command: str
    args: CommandArgs
    convert: Callable[[Any], Any] = lambda reply: True


def _fault(error: ControlError) -> xmlrpc.client.Fault:
    return xmlrpc.client.Fault(error.fault_code, f"{_fault_name(error)}: {error.message}")


def _fault_name(error: ControlError) -> str:
    names = {"SHUTTING_DOWN": "SHUTDOWN_STATE", "RELOAD_FAILED": "FAILED", "INTERNAL": "FAILED"}
    return names.get(error.code, error.code)


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
    state = p.state.name
    description = p.description
    if not description:
        if state == "RUNNING":
            # The monotonic uptime the master measured, never a difference of wall-clock times.
            description = f"pid {p.pid}, uptime {datetime.timedelta(seconds=int(p.uptime))}"
        elif state in ("FATAL", "BACKOFF"):
            description = p.spawnerr or f'unknown error (try "tail {p.name}")'
        elif state in ("STOPPED", "EXITED"):
            description = time.strftime("%b %d %I:%M %p", time.localtime(p.stop)) if p.start else "Not started"
    return {"name": p.name, "group": p.group or p.name, "start": p.start, "stop": p.stop,
            "now": p.now or int(now), "state": int(p.state), "statename": state, "spawnerr": p.spawnerr,
            "exitstatus": p.exitstatus, "logfile": p.stdout_logfile, "stdout_logfile": p.stdout_logfile,
            "stderr_logfile": p.stderr_logfile, "pid": p.pid, "description": description or ""}


def supervisor_results(reply: Any, matched: Sequence[Program]) -> list[dict[str, Any]]:
    """Per-process results with Supervisor's numeric status (80 = SUCCESS)."""
    out = []
    for r in commands.process_results(reply, matched):
        code = SUCCESS if r.ok else ERROR_CODES.get(r.status, (0, FAILED))[1]
        out.append({"name": r.name, "group": r.group, "status": code, "description": r.description})
    return out


def _single(matched: Sequence[Program]) -> Callable[[Any], bool]:
    def convert(reply: Any) -> bool:
        for r in commands.process_results(reply, matched):
            if not r.ok:
                raise ControlError(r.status, r.description)
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
            s + "sendRemoteCommEvent": (self.sendRemoteCommEvent, ["boolean", "string", "string"]),
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

                def got(value: Any, sync: list[bool] = sync) -> None:
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
        return list(self.backend.status().programs)

    def getAPIVersion(self) -> str:
        """Return the version of the RPC API used by supervisord."""
        return API_VERSION

    def getSupervisorVersion(self) -> str:
        """Return the version of the server (arbiter's version)."""
        return self.backend.status().master.version

    def getIdentification(self) -> str:
        """Return the identifying string of the server."""
        return "arbiter"

    def getState(self) -> dict[str, Any]:
        """Return the current state of the server as a struct {statecode, statename}."""
        running = self.backend.status().master.state == "RUNNING"
        return {"statecode": 1, "statename": "RUNNING"} if running else {"statecode": -1, "statename": "SHUTDOWN"}

    def getPID(self) -> int:
        """Return the PID of the master."""
        return self.backend.status().master.pid

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
        return Later("start", ProcessArgs((name,), bool(wait)), _single(select(self._programs(), [name])))

    def stopProcess(self, name: str, wait: bool = True) -> Later:
        """Stop a process; wait for it to be stopped."""
        return Later("stop", ProcessArgs((name,), bool(wait)), _single(select(self._programs(), [name])))

    def _group(self, command: str, spec: str, states: frozenset[ProcessStates], want: bool,
               args: Callable[[tuple[str, ...]], CommandArgs]) -> Later:
        matched = [p for p in select(self._programs(), [spec]) if (p.state in states) == want]
        wanted = {(p.group or p.name, p.name) for p in matched}

        def convert(reply: Any) -> list[dict[str, Any]]:
            # Supervisor reports only the processes the predicate chose (stop all: the running).
            return [r for r in supervisor_results(reply, matched) if (r["group"], r["name"]) in wanted]
        return Later(command, args((spec,)), convert)

    def startProcessGroup(self, name: str, wait: bool = True) -> Later:
        """Start every process of group name that is not running; return per-process results."""
        return self._group("start", f"{name}:*", RUNNING_STATES, False, lambda names: ProcessArgs(names, bool(wait)))

    def stopProcessGroup(self, name: str, wait: bool = True) -> Later:
        """Stop every running process of group name; return per-process results."""
        return self._group("stop", f"{name}:*", RUNNING_STATES, True, lambda names: ProcessArgs(names, bool(wait)))

    def startAllProcesses(self, wait: bool = True) -> Later:
        """Start every process that is not running; return per-process results."""
        return self._group("start", "all", RUNNING_STATES, False, lambda names: ProcessArgs(names, bool(wait)))

    def stopAllProcesses(self, wait: bool = True) -> Later:
        """Stop every running process; return per-process results."""
        return self._group("stop", "all", RUNNING_STATES, True, lambda names: ProcessArgs(names, bool(wait)))

    def signalProcess(self, name: str, signal: str) -> Later:
        """Send a signal (name or number) to a process."""
        sig = commands.signal_name(signal)
        return Later("signal", SignalArgs((name,), sig), _single(select(self._programs(), [name])))

    def _signal_group(self, spec: str, signal: str) -> Later:
        sig = commands.signal_name(signal)
        return self._group("signal", spec, SIGNALLABLE_STATES, True, lambda names: SignalArgs(names, sig))

    def signalProcessGroup(self, name: str, signal: str) -> Later:
        """Send a signal to every signallable process of a group."""
        return self._signal_group(f"{name}:*", signal)

    def signalAllProcesses(self, signal: str) -> Later:
        """Send a signal to every signallable process."""
        return self._signal_group("all", signal)

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
        return Later("clear", ClearArgs((name,)), _single(matched))

    def clearAllProcessLogs(self) -> Later:
        """Truncate every process's logs; return per-process results."""
        matched = self._programs()
        return Later("clear", ClearArgs(("all",)),
                     lambda reply: supervisor_results(reply, matched))

    def readLog(self, offset: int, length: int) -> str:
        """Read length bytes of the master's log from offset (negative offset: from the end)."""
        return read_range(self._log_file("master", "stdout"), int(offset), int(length)).data.decode("utf-8", "replace")

    def clearLog(self) -> Later:
        """Truncate the master's log."""
        return Later("clear", ClearArgs(("master",), ("stdout",)))

    # -- supervisor: configuration and life -------------------------------------------------------

    def reloadConfig(self) -> Later:
        """Read the configuration again; return [[added, changed, removed]] group names."""
        def convert(reply: Any) -> list[list[list[str]]]:
            reply = reply if isinstance(reply, dict) else {}
            return [[list(reply.get("added", [])), list(reply.get("changed", [])), list(reply.get("removed", []))]]
        return Later("reread", NoArgs(), convert)

    def getAllConfigInfo(self) -> Later:
        """Configured processes: those in use, then groups a reread found (only the keys
        supervisorctl's avail reads: name, group, inuse, autostart, group_prio, process_prio)."""
        programs = self._programs()

        def convert(reply: Any) -> list[dict[str, Any]]:
            added = list(reply.get("added", [])) if isinstance(reply, dict) else []

            def entry(name: str, group: str, inuse: bool, autostart: bool, priority: int) -> dict[str, Any]:
                return {"name": name, "group": group, "inuse": inuse, "autostart": autostart,
                        "group_prio": priority, "process_prio": priority}
            return ([entry(p.name, p.group or p.name, True, p.autostart, p.priority) for p in programs]
                    + [entry(g, g, False, True, 999) for g in added])
        return Later("reread", NoArgs(), convert)

    def addProcessGroup(self, name: str) -> Later:
        """Start using the configured group name."""
        return Later("add", GroupArgs((str(name),)))

    def removeProcessGroup(self, name: str) -> Later:
        """Stop using group name (its processes must be stopped)."""
        return Later("remove", GroupArgs((str(name),)))

    def sendRemoteCommEvent(self, type: str, data: str) -> Later:  # noqa: A002 -- Supervisor's name
        """Send a REMOTE_COMMUNICATION event (type, data) to the event listeners subscribed to it."""
        return Later("remote_event", RemoteEventArgs(str(type), str(data)))

    def shutdown(self) -> Later:
        """Stop every process and the master."""
        return Later("shutdown", NoArgs())

    def restart(self) -> Later:
        """Reload: Supervisor restarts itself; arbiter does a rolling reload of its workers."""
        return Later("reload", ReloadArgs(False))
