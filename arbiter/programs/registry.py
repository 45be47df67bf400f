"""The one record of the programs a master runs, kept on disk, and the rule for stopping what a
master that died without stopping them (SIGKILL, OOM killer, power cut of a container) left.

A program outlives a master that is SIGKILLed: it leads a session of its own. So the master
keeps, beside its pidfile or control socket, one small JSON file (mode 0600, replaced whole by
a rename, so a reader never sees half of it) naming each running child: its pid, its start time
(field 22 of /proc/PID/stat: with the pid it names one process for good, so a pid the kernel
gave to another process since is never touched), its process group, and what stopping or
adopting it needs. A new master reads it before it starts anything:

- `Orphans` (the rule for stopping): each recorded child still alive, with the same start time
  and process group, is stopped as its program is (its stopsignal to its group, SIGKILL after
  its stopwaitsecs), and nothing of the same name starts until it is gone: never two copies.
- `adoptable` (the rule for adopting): after an in-place upgrade (the same master, exec'd
  with the pipes' read ends kept open), each entry the master recorded itself, still alive by
  the same check (`Entry.alive`), is taken over with its pipes by the process of the same name;
  one the new configuration no longer has is stopped as an orphan is.

Nothing here blocks: the record is written once per manager turn in which a child was spawned
or reaped (a write and a rename of a few hundred bytes), and orphans are polled on the
manager's timers.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from arbiter import procfs
from arbiter.config.settings import Config
from arbiter.programs.child import Process
from arbiter.programs.states import KILL_REPEAT_MIN, signame

VERSION = 1
POLL = 0.05  # how often a stopping orphan is checked (it is not our child: no SIGCHLD for it)


@dataclass(frozen=True)
class Entry:
    """One running child, as recorded."""

    name: str  # its full name, group:process (or process)
    group: str
    pid: int
    starttime: int  # /proc/PID/stat field 22, clock ticks after boot
    pgid: int
    started: float  # wall-clock time it was spawned
    state: str  # its Supervisor state name when recorded
    stopsignal: int
    stopwaitsecs: float
    stopasgroup: bool
    killasgroup: bool
    stdout_logfile: str = ""
    stderr_logfile: str = ""
    # The master's read ends of the child's pipes (-1: none). An upgrade that execs in place
    # keeps them open to adopt the child with its output; a master started afresh has none.
    stdout_fd: int = -1
    stderr_fd: int = -1
    stdin_fd: int = -1  # an event listener's stdin (our write end)

    @property
    def fds(self) -> list[int]:
        """The master's descriptors of this child's pipes."""
        return [fd for fd in (self.stdout_fd, self.stderr_fd, self.stdin_fd) if fd >= 0]

    @classmethod
    def of(cls, proc: Process) -> Entry:
        """The entry of `proc`, whose child runs."""
        rules, paths = proc.rules, proc.output.logpaths
        fds = {channel: fd for channel, fd in proc.output.pipe_fds.items()
               if any(reader.fd == fd and not reader.closed for reader in proc.output.readers)}
        pid = proc.popen.pid if proc.popen is not None else proc.record.pid
        return cls(
            name=proc.fullname, group=proc.spec.group, pid=pid, starttime=proc.starttime, pgid=pid,
            started=proc.started_wall, state=proc.state.name, stopsignal=rules.stopsignal,
            stopwaitsecs=rules.stopwaitsecs, stopasgroup=rules.stopasgroup,
            killasgroup=rules.killasgroup, stdout_logfile=paths.get("stdout", ""),
            stderr_logfile=paths.get("stderr", ""), stdout_fd=fds.get("stdout", -1),
            stderr_fd=fds.get("stderr", -1), stdin_fd=proc.output.stdin_fd,
        )

    def alive(self) -> bool:
        """Still the very process recorded: same pid, same start time, same group, not a zombie."""
        found = procfs.stat(self.pid)
        return (found is not None and found.starttime == self.starttime and found.pgrp == self.pgid
                and found.state != "Z")


def record_path(cfg: Config, cwd: str) -> str | None:
    """Where the record is kept: beside the pidfile, else beside the control socket (`arbiter.sock`
    in the start directory when unset); relative paths from the start directory `cwd`, as for the
    socket itself. None when there is neither (`control_socket = "none"` and no pidfile)."""
    if cfg.pidfile:
        return os.path.normpath(os.path.join(cwd, os.path.expanduser(str(cfg.pidfile)))) + ".programs"
    sock: str | None = cfg.control_socket
    if sock is not None and sock.strip().lower() == "none":
        return None
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(sock or "arbiter.sock"))) + ".programs"


def write(path: str, master_pid: int, entries: list[Entry], events: dict[str, Any] | None = None) -> None:
    """Replace the record at `path` with `entries` (and, for an upgrade, the event listeners'
    state: `listeners.EventHub.export`), atomically, readable by its owner only.

    Raises:
        OSError: the folder cannot be written.
    """
    me = procfs.stat(master_pid)
    data: dict[str, Any] = {
        "version": VERSION,
        "master": {"pid": master_pid, "starttime": me.starttime if me else 0},
        "programs": [asdict(entry) for entry in entries],
    }
    if events is not None:
        data["events"] = events
    body = json.dumps(data, separators=(",", ":")).encode()
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask; this is not
        os.write(fd, body)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class Recorder:
    """Keeps the record at `path` (None: none) up to date: set `changed` when a child was
    spawned or reaped, and `write` once per turn."""

    def __init__(self, path: str | None, master_pid: int, log: logging.Logger) -> None:
        self.changed = False
        self._path, self._master_pid, self._log = path, master_pid, log
        self._failed = False

    def write(self, procs: Iterable[Process], *, closing: bool = False,
              events: dict[str, Any] | None = None) -> list[Entry]:
        """Record the children that run now (returned); `closing` with none left: remove the
        record. `events`: the listeners' state, for the image that adopts them."""
        self.changed = False
        entries = [Entry.of(proc) for proc in procs if proc.record.pid]  # a child that runs
        if self._path is None:
            return entries
        try:
            if closing and not entries:
                remove(self._path)
            else:
                write(self._path, self._master_pid, entries, events)
            self._failed = False
        except OSError as exc:
            if not self._failed:  # once per failure, not once per spawn
                self._log.error("cannot write the record of running programs %s: %s; a master "
                                "that replaces this one after a crash cannot find them",
                                self._path, exc.strerror)
            self._failed = True
            if events is not None:
                raise
        return entries


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read(path: str, log: logging.Logger) -> tuple[dict[str, Any], list[Entry]]:
    """(the recording master's {"pid", "starttime"} and, after an upgrade, {"events"}; its
    entries); nothing when there is no record or it cannot be read (which is logged: its
    programs cannot be found then)."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
        master = {"pid": int(data["master"]["pid"]), "starttime": int(data["master"]["starttime"]),
                  "events": data.get("events")}
        entries = [Entry(**item) for item in data["programs"]]
    except FileNotFoundError:
        return {}, []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the record of running programs %s (%s); programs a previous "
                    "master left running, if any, are not stopped", path, exc)
        return {}, []
    return master, entries


def adoptable(path: str | None, master_pid: int, log: logging.Logger) -> tuple[list[Entry], dict[str, Any] | None]:
    """After an in-place upgrade: the children this master (the same pid, exec'd) recorded that
    are still the very processes recorded, and the listeners' state it saved. The pipes of
    those no longer alive are closed."""
    if path is None:
        return [], None
    master, entries = read(path, log)
    if master.get("pid") != master_pid:
        return [], None
    alive = []
    for entry in entries:
        if entry.alive():
            alive.append(entry)
        else:
            for fd in entry.fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
    return alive, master.get("events")


class Orphans:
    """The children a previous master left running, being stopped (see the module).

    Args:
        entries: from `read`; those no longer alive are ignored.
        log: says what is done to each, and why.
    """

    def __init__(self, entries: list[Entry], log: logging.Logger) -> None:
        self._log = log
        self._stopping: dict[Entry, float] = {}  # entry -> when SIGKILL is (next) due
        self._entries = [entry for entry in entries if entry.alive()]

    @classmethod
    def left_by_predecessor(cls, path: str | None, master_pid: int, log: logging.Logger) -> Orphans:
        """The orphans recorded at `path`, unless the master that recorded them still runs
        (and is not this one, exec'd in place): a live master's programs are its own."""
        if path is None:
            return cls([], log)
        master, entries = read(path, log)
        if not entries:
            return cls([], log)
        pid, starttime = master.get("pid", 0), master.get("starttime", 0)
        if pid != master_pid and procfs.same_process(pid, starttime):
            log.warning("the record of running programs %s belongs to master %d, which is still "
                        "running: its programs are left alone", path, pid)
            return cls([], log)
        return cls(entries, log)

    def begin(self, now: float) -> None:
        """Send each orphan its stopsignal (to its process group)."""
        for entry in self._entries:
            self._log.warning(
                "%s (pid %d) was left running by a previous master that did not stop it; "
                "stopping its process group %d with %s before starting anything",
                entry.name, entry.pid, entry.pgid, signame(entry.stopsignal))
            self._signal(entry, entry.stopsignal)
            self._stopping[entry] = now + entry.stopwaitsecs

    def holds(self, name: str) -> bool:
        """An orphan of full name `name` is still being stopped: its program must wait."""
        return any(entry.name == name for entry in self._stopping)

    @property
    def pending(self) -> bool:
        return bool(self._stopping)

    def next_deadline(self, now: float) -> float | None:
        return now + POLL if self._stopping else None

    def poll(self, now: float) -> None:
        """Forget the orphans that are gone; SIGKILL the groups of those past stopwaitsecs."""
        for entry, kill_at in list(self._stopping.items()):
            if not entry.alive():
                self._log.info("stopped: %s (pid %d), left by a previous master", entry.name, entry.pid)
                del self._stopping[entry]
            elif now >= kill_at:
                self._log.warning("killing %s (pid %d), left by a previous master, with SIGKILL",
                                  entry.name, entry.pid)
                self._signal(entry, signal.SIGKILL)
                self._stopping[entry] = now + max(entry.stopwaitsecs, KILL_REPEAT_MIN)

    def _signal(self, entry: Entry, sig: int) -> None:
        if not entry.alive():  # checked again right before: a pid is never signalled once reused
            return
        try:
            os.killpg(entry.pgid, sig)
        except ProcessLookupError:
            pass
        except OSError as exc:
            self._log.error("cannot signal %s (pid %d) left by a previous master: %s",
                            entry.name, entry.pid, exc.strerror)
