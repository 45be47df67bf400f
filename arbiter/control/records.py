"""The control plane's records: a status snapshot (`Status`: `MasterInfo`, `WorkerRow`s,
`ProgramRow`s) and the arguments of each control command, as typed, frozen dataclasses.

A program's state is `ProcessStates` (Supervisor's numbered states) everywhere: in the program
manager, here, and in `arbiter ctl` after `from_json`; only the JSON spells it as two fields,
`"state": "RUNNING"` and `"statecode": 20`, as Supervisor's XML-RPC does. `to_json()` gives the
documented `/v1/status` shape; `from_json()` reads it back (the client side).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from arbiter.programs.states import ProcessStates

WorkerState = Literal["BOOTING", "READY", "RETIRING", "DRAINING", "MOLD"]
MasterState = Literal["RUNNING", "STOPPING"]
RUNNING_STATES = frozenset({ProcessStates.RUNNING, ProcessStates.BACKOFF, ProcessStates.STARTING})
STOPPED_STATES = frozenset({ProcessStates.STOPPED, ProcessStates.EXITED, ProcessStates.FATAL, ProcessStates.UNKNOWN})


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def program_state(value: Any) -> ProcessStates:
    """A state from its name ("RUNNING") or number (20); UNKNOWN for anything else."""
    if isinstance(value, ProcessStates):
        return value
    if isinstance(value, str) and value in ProcessStates.__members__:
        return ProcessStates[value]
    try:
        return ProcessStates(int(value))
    except (TypeError, ValueError):
        return ProcessStates.UNKNOWN


@dataclass(frozen=True)
class ReloadInfo:
    state: str = "none"  # "none" | "in progress" | "done" | "failed: <why>"
    count: int = 0
    failures: int = 0

    @property
    def failed(self) -> bool:
        return self.state.startswith("failed")


@dataclass(frozen=True)
class MasterInfo:
    pid: int
    version: str
    started: float  # unix time: when, as a date
    uptime: float  # seconds, from the monotonic clock
    state: MasterState = "RUNNING"
    generation: int = 0
    workers_target: int = 0
    reload: ReloadInfo = field(default_factory=ReloadInfo)
    worker_restarts: int | None = None
    worker_timeouts: int | None = None
    request_timeouts: int | None = None  # requests stopped at --request-timeout
    rss: int | None = None
    cpu: float | None = None
    listeners: tuple[str, ...] = ()
    restarts: Mapping[str, int] | None = None  # workers stopped, by reason (docs/guards.md)
    busy_ratio: float | None = None  # the workers' mean busy ratio over the last second

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MasterInfo:
        reload = data.get("reload") or {}
        return cls(pid=_int(data.get("pid")), version=str(data.get("version", "")),
                   started=_float(data.get("started")), uptime=_float(data.get("uptime")),
                   state="STOPPING" if data.get("state") == "STOPPING" else "RUNNING",
                   generation=_int(data.get("generation")), workers_target=_int(data.get("workers_target")),
                   reload=ReloadInfo(str(reload.get("state", "none")), _int(reload.get("count")),
                                     _int(reload.get("failures"))),
                   worker_restarts=data.get("worker_restarts"), worker_timeouts=data.get("worker_timeouts"),
                   request_timeouts=data.get("request_timeouts"),
                   rss=data.get("rss"), cpu=data.get("cpu"), listeners=tuple(data.get("listeners") or ()),
                   restarts={str(k): _int(v) for k, v in data["restarts"].items()}
                   if isinstance(data.get("restarts"), Mapping) else None,
                   busy_ratio=None if data.get("busy_ratio") is None else _float(data.get("busy_ratio")))


@dataclass(frozen=True)
class WorkerRow:
    pid: int
    state: WorkerState
    generation: int = 0
    number: int = 0  # the worker's age in the pool (Gunicorn's worker.age)
    age: float = 0.0  # seconds since it was forked
    heartbeat_age: float = 0.0
    requests: int = 0
    connections: int = 0
    rss: int = 0
    cpu: float = 0.0
    in_progress: int = 0  # requests being answered now
    role: str = "worker"  # reforking: "worker", "promoting" (becoming the mold) or "mold"
    forked_from: int = 0  # the pid of the mold this worker was forked by; 0: the master

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerRow:
        state = data.get("state")
        return cls(pid=_int(data.get("pid")),
                   state=state if state in ("BOOTING", "READY", "RETIRING", "DRAINING", "MOLD") else "BOOTING",
                   generation=_int(data.get("generation")), number=_int(data.get("number")),
                   age=_float(data.get("age")), heartbeat_age=_float(data.get("heartbeat_age")),
                   requests=_int(data.get("requests")), connections=_int(data.get("connections")),
                   rss=_int(data.get("rss")), cpu=_float(data.get("cpu")), in_progress=_int(data.get("in_progress")),
                   role=str(data.get("role") or "worker"), forked_from=_int(data.get("forked_from")))


@dataclass(frozen=True)
class ProgramRow:
    """One program process, with Supervisor's `getProcessInfo` fields (times in unix seconds,
    0 = never) and ours."""

    name: str
    group: str
    state: ProcessStates
    pid: int = 0
    start: int = 0
    stop: int = 0
    now: int = 0
    uptime: float = 0.0  # seconds RUNNING, from the monotonic clock
    exitstatus: int = 0
    spawnerr: str = ""
    description: str = ""
    stdout_logfile: str = ""
    stderr_logfile: str = ""
    priority: int = 999
    autostart: bool = True
    log_dropped_bytes: int = 0
    restarts: int | None = None
    rss: int | None = None
    cpu: float | None = None
    program: str = ""  # its program's name, which a numprocs pool shares (see programs.names)

    @property
    def namespec(self) -> str:
        """`group:name`, or `name` when the group is named after it (Supervisor's make_namespec)."""
        return self.name if not self.group or self.group == self.name else f"{self.group}:{self.name}"

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    def to_json(self) -> dict[str, Any]:
        # vars() rather than dataclasses.asdict: this runs for every row of every status request.
        out = {k: v for k, v in vars(self).items() if v is not None}
        out["state"], out["statecode"] = self.state.name, int(self.state)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProgramRow:
        name = str(data.get("name", ""))
        return cls(name=name, group=str(data.get("group") or name),
                   state=program_state(data.get("state", data.get("statecode"))),
                   pid=_int(data.get("pid")), start=_int(data.get("start")), stop=_int(data.get("stop")),
                   now=_int(data.get("now")), uptime=_float(data.get("uptime")),
                   exitstatus=_int(data.get("exitstatus")), spawnerr=str(data.get("spawnerr") or ""),
                   description=str(data.get("description") or ""),
                   stdout_logfile=str(data.get("stdout_logfile") or ""),
                   stderr_logfile=str(data.get("stderr_logfile") or ""),
                   priority=_int(data.get("priority"), 999), autostart=bool(data.get("autostart", True)),
                   log_dropped_bytes=_int(data.get("log_dropped_bytes")), restarts=data.get("restarts"),
                   rss=data.get("rss"), cpu=data.get("cpu"), program=str(data.get("program") or name))


@dataclass(frozen=True)
class Status:
    """One snapshot of the master, its web workers and its programs."""

    master: MasterInfo
    workers: tuple[WorkerRow, ...] = ()
    programs: tuple[ProgramRow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        master = {k: v for k, v in vars(self.master).items() if v is not None}
        master["reload"], master["listeners"] = dict(vars(self.master.reload)), list(self.master.listeners)
        if self.master.restarts is not None:
            master["restarts"] = dict(self.master.restarts)
        return {"master": master, "workers": [dict(vars(w)) for w in self.workers],
                "programs": [p.to_json() for p in self.programs]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Status:
        return cls(MasterInfo.from_json(data.get("master") or {}),
                   tuple(WorkerRow.from_json(w) for w in data.get("workers") or ()),
                   tuple(ProgramRow.from_json(p) for p in data.get("programs") or ()))


# -- the arguments of each command (see backend.py for what each replies) --------------------------

@dataclass(frozen=True)
class ProcessArgs:
    """start, stop, restart: process names (`prog`, `group:prog`, `group:*`, `all`)."""

    names: tuple[str, ...]
    wait: bool = True


@dataclass(frozen=True)
class SignalArgs:
    names: tuple[str, ...]
    signal: str  # the bare name: "HUP"


@dataclass(frozen=True)
class ClearArgs:
    names: tuple[str, ...]  # ("master",) for the master's own log
    streams: tuple[str, ...] = ("stdout", "stderr")


@dataclass(frozen=True)
class ReloadArgs:
    wait: bool = False


@dataclass(frozen=True)
class ScaleArgs:
    spec: str  # "+N", "-N" or "=N"


@dataclass(frozen=True)
class GroupArgs:
    """update (empty: all), add, remove: group names."""

    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplaceWorkerArgs:
    pid: int


@dataclass(frozen=True)
class RemoteEventArgs:
    """remote_event: Supervisor's sendRemoteCommEvent(type, data)."""

    type: str
    data: str


@dataclass(frozen=True)
class NoArgs:
    """reread, shutdown."""


CommandArgs = (ProcessArgs | SignalArgs | ClearArgs | ReloadArgs | ScaleArgs | GroupArgs | ReplaceWorkerArgs
               | NoArgs | RemoteEventArgs)
