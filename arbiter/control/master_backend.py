"""The master as the control API sees it: a `Backend` whose commands run in the master's loop.

Handlers call `submit()`, which queues the command with `master.call_soon`; it then runs in a
loop turn like everything else the master does. Commands that wait (`reload --wait`, `start`
with wait) park a condition that is checked every turn until it settles.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from arbiter import __version__, procfs
from arbiter.control.backend import Command, ControlError
from arbiter.control.server import ControlServer
from arbiter.errors import ArbiterError, ConfigError
from arbiter.programs.errors import ProgramError
from arbiter.programs.manager import Progress
from arbiter.programs.memlog import MemoryLog
from arbiter.web.scoreboard import SlotState

SETTLED = object()  # a waiting command's check: done, reply with nothing more to say
WAIT_POLL = 0.05


def proc_usage(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process from /proc; zeros if it is gone."""
    return procfs.usage(pid) or (0, 0.0)


class MasterBackend:
    """Implements `arbiter.control.backend.Backend` for a `Master`, and is a service of its loop
    (to settle waiting commands)."""

    def __init__(self, master: Any) -> None:
        self.master = master
        self.started = time.time()
        self._waiting: list[tuple[Callable[[], Any], Command]] = []

    # -- Backend ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        master, pool = self.master, self.master.pool
        now_ns = time.monotonic_ns()
        rss, cpu = proc_usage(master.pid)
        workers = []
        for worker in list(pool.workers.values()):
            view = pool.scoreboard.read(worker.slot.index)
            state = view.state.name if view.state != SlotState.FREE else "BOOTING"
            if worker.retiring and state in ("READY", "RETIRING"):
                state = "DRAINING"
            w_rss, w_cpu = proc_usage(worker.pid)
            workers.append({
                "pid": worker.pid, "number": worker.age, "generation": worker.generation, "state": state,
                "age": round(master.clock() - worker.spawned_at, 3),
                "heartbeat_age": round(max(0, now_ns - view.heartbeat_ns) / 1e9, 3),
                "requests": view.requests, "connections": view.connections, "rss": w_rss, "cpu": w_cpu,
            })
        programs = [self._program_row(row) for row in master.programs.status()] if master.programs else []
        return {
            "master": {
                "pid": master.pid, "version": __version__, "started": self.started,
                "uptime": round(time.time() - self.started, 3),
                "state": "STOPPING" if master.stopping else "RUNNING",
                "generation": pool.generation, "workers_target": pool.target,
                "reload": {"state": pool.last_reload, "count": pool.stats["reloads"],
                           "failures": pool.reload_failures},
                "worker_restarts": pool.stats["restarts"], "worker_timeouts": pool.stats["timeouts"],
                "rss": rss, "cpu": cpu, "listeners": [listener.url() for listener in master.listeners],
            },
            "workers": workers,
            "programs": programs,
        }

    @staticmethod
    def _program_row(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        out["state"], out["statecode"] = row["statename"], row["state"]
        return out

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
            return programs.log_path(name, stream)
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
        names = [str(name) for name in command.args.get("names") or []]
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
        single = len(names) == 1 and names == command.args.get("names")
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
        programs = self._programs()
        skip = {"running": {"STARTING", "RUNNING", "BACKOFF"}, "stopped": {"STOPPED", "EXITED", "FATAL", "UNKNOWN"}}
        # Processes already where a start (or stop) of several takes them are not acted on.
        before = {(row["group"], row["name"]) for row in programs.status()
                  if command.name != "restart" and row["statename"] in skip[goal]}
        names, failures = self._try_each(command, act)
        if not command.args.get("wait", True) or not names:
            command.reply(failures or None)
            return
        single = len(command.args.get("names") or []) == 1 and not failures

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
        sig = str(command.args.get("signal", ""))
        if self._each(command, lambda name: self._programs().signal(name, sig)):
            command.reply(None)

    def _do_clear(self, command: Command) -> None:
        streams = command.args.get("streams") or ["stdout", "stderr"]
        names = [str(name) for name in command.args.get("names") or []]
        if names == ["master"]:
            path = self.log_path("master", "stdout")
            if path:
                os.truncate(path, 0)
            command.reply(None)
            return
        if self._each(command, lambda name: [self._programs().clear_log(name, s) for s in streams]):
            command.reply(None)

    def _do_reload(self, command: Command) -> None:
        pool = self.master.pool
        before = pool.stats["reloads"]
        refused = self.master.reload()
        if refused:
            raise ControlError("RELOAD_FAILED", refused)
        if not command.args.get("wait"):
            command.reply({"state": pool.last_reload, "generation": pool.generation})
            return

        def check() -> Any:
            if pool.stats["reloads"] == before or pool.last_reload == "in progress":
                return None
            if pool.last_reload.startswith("failed"):
                raise ControlError("RELOAD_FAILED", pool.last_reload)
            return {"state": pool.last_reload, "generation": pool.generation}

        self._waiting.append((check, command))

    def _do_scale(self, command: Command) -> None:
        spec = str(command.args.get("spec", "")).strip()
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
        names = [str(name) for name in command.args.get("names") or []] or None
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


def attach_control(master: Any, environ: dict[str, str] | None = None) -> ControlServer | None:
    """Plug the control API into `master` from its config: the unix socket (default:
    arbiter.sock beside the pidfile, else in the working directory), and TCP if asked."""
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    cfg = master.cfg
    unix_path = cfg.control_socket
    if unix_path is None:
        base = os.path.dirname(os.path.abspath(cfg.pidfile)) if cfg.pidfile else master.start_cwd
        unix_path = os.path.join(base, "arbiter.sock")
    elif unix_path.lower() == "none":
        unix_path = None
    tcp = None
    if cfg.control_bind:
        host, _, port = cfg.control_bind.rpartition(":")
        try:
            tcp = (host.strip("[]") or "127.0.0.1", int(port))
        except ValueError:
            raise ConfigError(f"control_bind {cfg.control_bind!r}: expected HOST:PORT") from None
    token = environ.get("ARBITER_TOKEN")
    if cfg.control_token_file:
        try:
            with open(cfg.control_token_file) as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise ConfigError(f"control_token_file {cfg.control_token_file}: {exc.strerror}") from None
    if unix_path is None and tcp is None:
        return None
    backend = MasterBackend(master)
    server = ControlServer(backend, master.selector, unix_path=unix_path, unix_mode=cfg.control_socket_mode,
                           tcp=tcp, token=token, log=master.log, clock=master.clock)
    master.attach(backend)
    master.attach(server)
    return server
