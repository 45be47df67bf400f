"""The master as the control API sees it: a `Backend` whose commands run in the master's loop.

Handlers call `submit()`, which queues the command with `master.call_soon`; it then runs in a
loop turn like everything else the master does. Commands that wait (`reload --wait`, `start`
with wait) park a condition that is checked every turn until it settles.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from arbiter import __version__, procfs
from arbiter.control import location
from arbiter.control.backend import Command, ControlError
from arbiter.control.records import (
    ClearArgs,
    GroupArgs,
    MasterInfo,
    ProcessArgs,
    ProgramRow,
    ReloadArgs,
    ReloadInfo,
    RemoteEventArgs,
    ReplaceWorkerArgs,
    ScaleArgs,
    SignalArgs,
    Status,
    WorkerRow,
    WorkerState,
    program_state,
)
from arbiter.control.security import Credentials
from arbiter.control.server import ControlServer, missing_credential
from arbiter.errors import ArbiterError, ConfigError
from arbiter.events.types import remote_communication
from arbiter.programs.errors import ProgramError
from arbiter.programs.goals import Progress
from arbiter.programs.memlog import MemoryLog
from arbiter.web.scoreboard import SlotState

if TYPE_CHECKING:
    from arbiter.config.settings import Config
    from arbiter.master.guardian import Guardian
    from arbiter.master.loop import Service
    from arbiter.master.pool import WorkerPool
    from arbiter.programs.manager import ProgramManager
    from arbiter.web.sockets import Listener

# A slot's state as a status row names it (a slot just claimed may still read FREE).
_WORKER_STATE: dict[SlotState, WorkerState] = {
    SlotState.FREE: "BOOTING", SlotState.BOOTING: "BOOTING", SlotState.READY: "READY",
    SlotState.DRAINING: "DRAINING", SlotState.RETIRING: "RETIRING", SlotState.MOLD: "MOLD",
}


class ControlledMaster(Protocol):
    """What the control API uses of the master (arbiter.master.loop.Master)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def pid(self) -> int: ...
    @property
    def log(self) -> logging.Logger: ...
    @property
    def start_cwd(self) -> str: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def pool(self) -> WorkerPool: ...
    @property
    def guardian(self) -> Guardian: ...
    @property
    def programs(self) -> ProgramManager | None: ...
    @property
    def listeners(self) -> Sequence[Listener]: ...
    @property
    def selector(self) -> selectors.BaseSelector: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def reload_config(self) -> Callable[[], Config] | None: ...
    def call_soon(self, fn: Callable[[], None]) -> None: ...
    def attach(self, service: Service) -> None: ...
    def reload(self) -> str | None: ...
    def scale(self, count: int, minimum: int = 1) -> None: ...
    def stop(self, graceful: bool = True, exit_code: int = 0) -> None: ...


SETTLED = object()  # a waiting command's check: done, reply with nothing more to say
WAIT_POLL = 0.05


def proc_usage(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process from /proc; zeros if it is gone."""
    return procfs.usage(pid) or (0, 0.0)


@dataclass(frozen=True)
class Started:
    """When the master started: `wall` (unix time) to show as a date, `monotonic` (on the
    master's clock) to measure from."""

    wall: float
    monotonic: float

    def uptime(self, now: float) -> float:
        """Seconds since the start, `now` being a reading of the same monotonic clock."""
        return round(max(0.0, now - self.monotonic), 3)


class MasterBackend:
    """Implements `arbiter.control.backend.Backend` for a `Master`, and is a service of its loop
    (to settle waiting commands)."""

    def __init__(self, master: ControlledMaster) -> None:
        self.master = master
        # Uptime from the monotonic clock (a clock step must not change it); the wall time
        # only as the start's date.
        self.started = Started(wall=time.time(), monotonic=master.clock())
        self._waiting: list[tuple[Callable[[], Any], Command]] = []

    # -- Backend ---------------------------------------------------------------------------

    def status(self) -> Status:
        master, pool = self.master, self.master.pool
        now_ns = time.monotonic_ns()
        rss, cpu = proc_usage(master.pid)
        workers = []
        for worker in [w for w in pool.workers.values() if w.pid > 0]:  # not the ones the mold owes
            view = pool.scoreboard.read(worker.slot.index)
            state = _WORKER_STATE[view.state]
            if worker.stop_sent and state in ("READY", "RETIRING"):
                state = "DRAINING"
            elif worker.wants_retirement and state == "READY":
                state = "RETIRING"  # its replacement is on the way
            w_rss, w_cpu = proc_usage(worker.pid)
            workers.append(WorkerRow(
                pid=worker.pid, number=worker.age, generation=worker.generation, state=state,
                age=round(master.clock() - worker.spawned_at, 3),
                heartbeat_age=round(max(0, now_ns - view.heartbeat_ns) / 1e9, 3),
                requests=view.requests, connections=view.connections, rss=w_rss, cpu=w_cpu,
                in_progress=view.in_progress, role=worker.role, forked_from=worker.forked_from))
        programs: list[ProgramRow] = []
        if master.programs:
            configs = {program.name: program for program in master.cfg.programs}
            programs = [self._program_row(row, configs.get(row.get("program", row["name"])))
                        for row in master.programs.status()]
        info = MasterInfo(
            pid=master.pid, version=__version__, started=self.started.wall,
            uptime=self.started.uptime(master.clock()), state="STOPPING" if master.stopping else "RUNNING",
            generation=pool.generation, workers_target=pool.target,
            reload=ReloadInfo(state=str(pool.last_reload), count=pool.stats["reloads"], failures=pool.reload_failures),
            worker_restarts=pool.stats["restarts"], worker_timeouts=pool.stats["timeouts"],
            request_timeouts=pool.stats["request_timeouts"],
            rss=rss, cpu=cpu, listeners=tuple(listener.url() for listener in master.listeners),
            restarts=dict(pool.restarts), busy_ratio=round(master.guardian.busy_ratio, 4))
        return Status(info, tuple(workers), tuple(programs))

    @staticmethod
    def _program_row(row: dict[str, Any], config: Any) -> ProgramRow:
        """The program manager's row as a record; Supervisor's avail shows priority and
        autostart (a [group:x] priority is its programs' default)."""
        return ProgramRow(
            name=row["name"], group=row["group"], program=row.get("program", row["name"]),
            state=program_state(row["state"]), pid=row["pid"],
            start=row["start"], stop=row["stop"], now=row["now"], uptime=row["uptime"],
            exitstatus=row["exitstatus"], spawnerr=row["spawnerr"] or "", description=row["description"],
            stdout_logfile=row["stdout_logfile"], stderr_logfile=row["stderr_logfile"],
            priority=config.priority if config is not None else 999,
            autostart=config.autostart if config is not None else True,
            log_dropped_bytes=row.get("log_dropped_bytes", 0), restarts=row.get("restarts"))

    def submit(self, command: Command) -> None:
        self.master.call_soon(lambda: self._run(command))

    def log_path(self, name: str, stream: str) -> str | None:
        if name == "master":
            errorlog = self.master.cfg.errorlog
            return None if errorlog == "-" else os.path.abspath(errorlog)
        programs = self.master.programs
        if programs is None:
            raise ControlError("BAD_NAME", f"no such process: {name}")
        try:
            path: str | None = programs.log_path(name, stream)
            return path
        except ProgramError as exc:
            raise _control_error(exc) from None

    def log_memory(self, name: str, stream: str) -> MemoryLog | None:
        programs = self.master.programs
        if name == "master" or programs is None:
            return None
        try:
            memory: MemoryLog | None = programs.log_memory(name, stream)
        except ProgramError as exc:
            raise _control_error(exc) from None
        return memory

    # -- service of the master loop ------------------------------------------------------------

    def start(self) -> None:
        pass

    def tick(self) -> None:
        still = []
        for check, command in self._waiting:
            try:
                outcome = check()
            except ControlError as exc:
                command.fail(exc)
                continue
            if outcome is None:
                still.append((check, command))
            else:
                command.reply(None if outcome is SETTLED else outcome)
        self._waiting = still

    def next_deadline(self) -> float | None:
        return self.master.clock() + WAIT_POLL if self._waiting else None

    def close_in_child(self) -> None:
        pass

    def close(self) -> None:
        for _, command in self._waiting:
            command.fail(ControlError("SHUTTING_DOWN", "the master is stopping"))
        self._waiting = []

    # -- commands ----------------------------------------------------------------------------

    def _run(self, command: Command) -> None:
        handler = getattr(self, "_do_" + command.name, None)
        try:
            if handler is None:
                raise ControlError("BAD_REQUEST", f"unknown command {command.name!r}")
            if self.master.stopping and command.name != "shutdown":
                raise ControlError("SHUTTING_DOWN", "the master is stopping")
            handler(command)
        except ControlError as exc:
            command.fail(exc)
        except ProgramError as exc:
            command.fail(_control_error(exc))
        except ArbiterError as exc:
            command.fail(ControlError("FAILED", str(exc)))

    def _programs(self) -> Any:
        if self.master.programs is None:
            raise ControlError("BAD_NAME", "no programs are configured")
        return self.master.programs

    def _names(self, command: Command) -> list[str]:
        assert isinstance(command.args, (ProcessArgs, SignalArgs, ClearArgs, GroupArgs))
        names = list(command.args.names)
        if not names:
            raise ControlError("BAD_ARGUMENTS", "name at least one process, group:*, or all")
        if "all" in names:
            return sorted({f"{row['group']}:*" for row in self._programs().status()})
        return names

    def _each(self, command: Command, act: Callable[[str], Any]) -> list[str]:
        """Apply `act` to every name; one failing name fails a single-name command, and is
        reported in place in a many-name one."""
        names, failures = self._try_each(command, act)
        if failures:
            command.reply(failures)
            return []
        return names

    def _try_each(self, command: Command, act: Callable[[str], Any]) -> tuple[list[str], list[dict[str, Any]]]:
        """(the names `act` took, a result for each it refused); a single name raises instead."""
        names = self._names(command)
        single = len(names) == 1 and names == list(getattr(command.args, "names", ()))
        done: list[str] = []
        failures: list[dict[str, Any]] = []
        for name in names:
            try:
                act(name)
                done.append(name)
            except ProgramError as exc:
                if single:
                    raise
                failures.append({"name": name, "group": name.split(":")[0], "status": exc.fault,
                                 "description": exc.message})
        return done, failures

    def _per_process(self, command: Command, act: Callable[[str], Any], goal: str) -> None:
        """start/stop/restart: act on each name, then (with wait) answer once every process
        acted on reached `goal` or will not: one result per process, as Supervisor's
        startAllProcesses does (a single process named alone fails the command instead)."""
        assert isinstance(command.args, ProcessArgs)
        programs = self._programs()
        skip = {"running": {"STARTING", "RUNNING", "BACKOFF"}, "stopped": {"STOPPED", "EXITED", "FATAL", "UNKNOWN"}}
        # Processes already where a start (or stop) of several takes them are not acted on.
        before = {(row["group"], row["name"]) for row in programs.status()
                  if command.name != "restart" and row["statename"] in skip[goal]}
        names, failures = self._try_each(command, act)
        if not command.args.wait or not names:
            # Not waiting: still say which could not even be spawned, as Supervisor does.
            now = programs.progress(names, goal) if names and goal == "running" else []
            failures += [_result(p, goal) for p in now if p.spawn_error and (p.group, p.name) not in before]
            command.reply(failures or None)
            return
        single = len(command.args.names) == 1 and not failures

        def check() -> Any:
            progress = [p for p in programs.progress(names, goal) if (p.group, p.name) not in before]
            if single and len(progress) == 1 and progress[0].reached is False:
                raise ControlError("SPAWN_ERROR" if goal == "running" else "FAILED",
                                   f"{', '.join(names)} did not reach {goal.upper()}: {progress[0].why_not}")
            if any(p.reached is None for p in progress):
                return None
            return failures + [_result(p, goal) for p in progress]

        self._waiting.append((check, command))

    def _do_start(self, command: Command) -> None:
        self._per_process(command, self._programs().start, "running")

    def _do_stop(self, command: Command) -> None:
        self._per_process(command, self._programs().stop, "stopped")

    def _do_restart(self, command: Command) -> None:
        self._per_process(command, self._programs().restart, "running")

    def _do_signal(self, command: Command) -> None:
        assert isinstance(command.args, SignalArgs)
        sig = command.args.signal
        if self._each(command, lambda name: self._programs().signal(name, sig)):
            command.reply(None)

    def _do_clear(self, command: Command) -> None:
        assert isinstance(command.args, ClearArgs)
        streams = list(command.args.streams) or ["stdout", "stderr"]
        names = list(command.args.names)
        if names == ["master"]:
            path = self.log_path("master", "stdout")
            if path:
                os.truncate(path, 0)
            command.reply(None)
            return
        def clear(name: str) -> None:
            for stream in streams:
                self._programs().clear_log(name, stream)

        if self._each(command, clear):
            command.reply(None)

    def _do_reload(self, command: Command) -> None:
        pool = self.master.pool
        before = pool.stats["reloads"]
        refused = self.master.reload()
        if refused:
            raise ControlError("RELOAD_FAILED", refused)
        assert isinstance(command.args, ReloadArgs)
        if not command.args.wait:
            command.reply({"state": str(pool.last_reload), "generation": pool.generation})
            return

        def check() -> Any:
            if pool.stats["reloads"] == before or pool.last_reload.in_progress:
                return None
            if pool.last_reload.has_failed:
                raise ControlError("RELOAD_FAILED", str(pool.last_reload))
            return {"state": str(pool.last_reload), "generation": pool.generation}

        self._waiting.append((check, command))

    def _do_scale(self, command: Command) -> None:
        assert isinstance(command.args, ScaleArgs)
        spec = command.args.spec.strip()
        target = self.master.pool.target
        try:
            number = int(spec.lstrip("+-="))
        except ValueError:
            raise ControlError("BAD_ARGUMENTS", f"scale takes +N, -N or =N, not {spec!r}") from None
        new = target + number if spec[:1] == "+" else target - number if spec[:1] == "-" else number
        if new < 1:
            raise ControlError("BAD_ARGUMENTS", f"scale {spec}: at least one worker must remain")
        self.master.scale(new)
        command.reply({"workers_target": self.master.pool.target})

    def _do_replace_worker(self, command: Command) -> None:
        assert isinstance(command.args, ReplaceWorkerArgs)
        pid = command.args.pid
        if pid not in self.master.pool.workers:
            raise ControlError("BAD_NAME", f"no such web worker: {pid}")
        if not self.master.pool.replace_worker(pid):
            raise ControlError("ALREADY_STARTED", f"worker {pid} is already being replaced or stopped")
        command.reply({"pid": pid})

    def _do_refork(self, command: Command) -> None:
        refused = self.master.pool.molds.refork_now()
        if refused is not None:
            raise ControlError("FAILED", f"cannot refork: {refused}", http_status=409)
        command.reply({"refork": True})

    def _do_remote_event(self, command: Command) -> None:
        assert isinstance(command.args, RemoteEventArgs)
        self._programs().publish(remote_communication(command.args.type, command.args.data))
        command.reply(True)

    def _do_shutdown(self, command: Command) -> None:
        command.reply({"shutdown": True})
        self.master.stop(graceful=True)

    def _new_config(self) -> Any:
        if self.master.reload_config is None:
            raise ControlError("CANT_REREAD", "this master has no config to reread")
        try:
            return self.master.reload_config()
        except ConfigError as exc:
            raise ControlError("CANT_REREAD", str(exc)) from None

    def _do_reread(self, command: Command) -> None:
        cfg = self._new_config()
        command.reply(self._programs().diff(cfg.programs, cfg.groups).as_dict())

    def _do_update(self, command: Command) -> None:
        cfg = self._new_config()
        assert isinstance(command.args, GroupArgs)
        names = list(command.args.names) or None
        command.reply(self._programs().update(cfg.programs, cfg.groups, names).as_dict())

    def _do_add(self, command: Command) -> None:
        cfg = self._new_config()
        for name in self._names(command):
            self._programs().add_group(name, cfg.programs, cfg.groups)
        command.reply(None)

    def _do_remove(self, command: Command) -> None:
        for name in self._names(command):
            self._programs().remove_group(name)
        command.reply(None)


def _result(progress: Progress, goal: str) -> dict[str, Any]:
    """One process's answer: OK, or why it did not get to `goal`, in Supervisor's terms (a
    spawn error when it could not start or exited within startsecs, else an abnormal end)."""
    if progress.reached:
        return {"name": progress.name, "group": progress.group, "status": "OK", "description": "OK"}
    if goal != "running":
        code = "FAILED"
    else:
        code = "SPAWN_ERROR" if progress.spawn_error else "ABNORMAL_TERMINATION"
    return {"name": progress.name, "group": progress.group, "status": code, "description": progress.why_not}


def _control_error(exc: ProgramError) -> ControlError:
    return ControlError(exc.fault, exc.message)


def control_credentials(cfg: Any, environ: Mapping[str, str]) -> Credentials:
    """The TCP control credential from the config: the token (`control_token_file`, else
    `$ARBITER_TOKEN`) and a supervisord.conf's `[inet_http_server]` username and password.

    Raises:
        ConfigError: the token file cannot be read, or an `[inet_http_server]` has no username
            while no token is set (naming the two lines to add).
    """
    token = environ.get("ARBITER_TOKEN") or None
    if cfg.control_token_file:
        try:
            with open(cfg.control_token_file) as handle:
                token = handle.read().strip() or None
        except OSError as exc:
            raise ConfigError(f"control_token_file {cfg.control_token_file}: {exc.strerror}") from None
        if token is None:
            raise ConfigError(f"control_token_file {cfg.control_token_file}: the file is empty")
    username, password = cfg.extras.http_auth or (None, None)
    if cfg.extras.http_auth is not None and not username and not token:
        raise ConfigError(
            f"{cfg.config}: [inet_http_server] has no username, and TCP control needs a credential; "
            "add these two lines to [inet_http_server]:\n    username = NAME\n    password = SECRET\n"
            "(the password may be {SHA} followed by its SHA-1 hex digest, as in Supervisor)")
    return Credentials(token=token, username=username or None, password=password if username else None)


def attach_control(master: ControlledMaster, environ: Mapping[str, str] | None = None) -> ControlServer | None:
    """Plug the control API into `master` from its config: the unix socket where
    `arbiter.control.location` says (the rule `arbiter ctl` uses too), and TCP if asked, which
    needs a credential.

    Raises:
        ConfigError: a bad `control_bind`, an unreadable token file, or TCP without a credential.
    """
    environ = os.environ if environ is None else environ
    cfg = master.cfg
    unix_path = location.control_socket_path(cfg, master.start_cwd)
    try:
        tcp = location.control_tcp_address(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    credentials = control_credentials(cfg, environ)
    if tcp is not None and not credentials.any:
        raise ConfigError(missing_credential(cfg.control_bind or ""))  # set, since tcp is
    if unix_path is None and tcp is None:
        return None
    backend = MasterBackend(master)
    server = ControlServer(backend, master.selector, unix_path=unix_path, unix_mode=cfg.control_socket_mode,
                           unix_owner=cfg.control_socket_owner, tcp=tcp, credentials=credentials,
                           log=master.log, clock=master.clock)
    if cfg.metrics_token_file:
        try:
            with open(cfg.metrics_token_file) as handle:
                server.guard.metrics_token = handle.read().strip() or None
        except OSError as exc:
            raise ConfigError(f"metrics_token_file {cfg.metrics_token_file}: {exc.strerror}") from None
    master.attach(backend)
    master.attach(server)
    return server
