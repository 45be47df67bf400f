"""In-place upgrade: the master re-executes itself with the same PID and keeps its workers.

Gunicorn's USR2 starts a second master with a new PID, which breaks systemd's idea of the main
process. Here the master calls execve() on itself: the PID, the children and every file
descriptor not marked close-on-exec survive. What the new image needs to carry on is written to
one environment variable: the listening sockets' fds by address, the scoreboard's fd, and the
running workers. The new image adopts all of it and rolls the workers over to its own code.
Programs keep running too: their pipes' read ends stay open across exec, and the new image
takes them over from the record of running programs (`programs.adoption`).

Before exec'ing, the master checks that the new code loads, in a child process
(`--check-config`): after execve() there is no old image to fall back to.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

from arbiter import logs
from arbiter.master.reload_state import ReloadState

if TYPE_CHECKING:
    from arbiter.config.settings import Config
    from arbiter.master.pool import WorkerPool
    from arbiter.master.systemd import Notifier
    from arbiter.programs.manager import ProgramManager
    from arbiter.web.scoreboard import Scoreboard
    from arbiter.web.sockets import Listener

ENV = "ARBITER_REEXEC"


@dataclass(frozen=True)
class AdoptedWorker:
    pid: int
    age: int
    generation: int
    slot: int
    ready: bool


@dataclass(frozen=True)
class HandOver:
    cwd: str
    listeners: dict[str, int]  # address text -> fd
    scoreboard_fd: int
    generation: int
    age: int
    target: int
    configured: int  # `workers` in the old config: a change in the new one wins over TTIN/TTOU
    workers: list[AdoptedWorker] = field(default_factory=list)

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> HandOver:
        data = json.loads(text)
        data["workers"] = [AdoptedWorker(**worker) for worker in data["workers"]]
        return cls(**data)


def take(environ: MutableMapping[str, str]) -> HandOver | None:
    """The hand-over left by the previous image, removed from the environment so that workers
    and programs never see it."""
    text = environ.pop(ENV, None)
    return HandOver.decode(text) if text else None


def command() -> list[str]:
    """The command line this interpreter was started with (`python -m arbiter ...` or the
    `arbiter` script), to run again."""
    return [sys.executable, *sys.orig_argv[1:]]


def check_command() -> list[str]:
    return [*command(), "--check-config"]


def reexec(handover: HandOver, inherit: Sequence[int], environ: Mapping[str, str]) -> None:
    """Replace this process image; returns only if execve() itself fails (raises OSError)."""
    for fd in inherit:
        os.set_inheritable(fd, True)
    env = dict(environ)
    env[ENV] = handover.encode()
    os.chdir(handover.cwd)
    os.execve(sys.executable, command(), env)


class _Closable(Protocol):
    def close(self) -> None: ...


class UpgradeHost(Protocol):
    """What the upgrader uses of the master (read-only: it changes only the pool's reload state)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def log(self) -> logging.Logger: ...
    @property
    def pid(self) -> int: ...
    @property
    def start_cwd(self) -> str: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def pool(self) -> WorkerPool: ...
    @property
    def programs(self) -> ProgramManager | None: ...
    @property
    def listeners(self) -> Sequence[Listener]: ...
    @property
    def scoreboard(self) -> Scoreboard: ...
    @property
    def notify(self) -> Notifier: ...
    @property
    def services(self) -> Sequence[_Closable]: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    def adopt_child(self, pid: int, on_exit: Callable[[int], None]) -> None: ...


class Upgrader:
    """Runs one upgrade at a time for a master: the check child, then the re-exec."""

    def __init__(self, master: UpgradeHost) -> None:
        self.master = master
        self._check: subprocess.Popen[bytes] | None = None
        self._deadline = 0.0

    def start(self) -> None:
        master = self.master
        if self._check is not None:
            master.log.info("Upgrade already under way")
            return
        env = dict(os.environ)
        env.pop(ENV, None)
        self._check = subprocess.Popen(check_command(), cwd=master.start_cwd, env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._deadline = master.clock() + max(master.cfg.timeout, 30.0)
        master.adopt_child(self._check.pid, self._checked)
        master.log.info("Upgrade: checking that the new code loads (pid %d)", self._check.pid)

    def tick(self, now: float) -> None:
        if self._check is not None and now > self._deadline:
            self.master.log.error("Upgrade check did not finish in time; killing it")
            self._check.kill()

    def _checked(self, status: int) -> None:
        master, proc, self._check = self.master, self._check, None
        code = os.waitstatus_to_exitcode(status)
        if proc is not None:
            proc.returncode = code  # reaped by the master; Popen must not wait for it again
        if code != 0 or master.stopping:
            master.pool.last_reload = ReloadState.failed(f"upgrade check exited {code}")
            master.log.error("Upgrade refused: the new code does not load (check exited %d); still serving", code)
            return
        self._exec()

    def _exec(self) -> None:
        master = self.master
        master.notify.reloading("Upgrading in place")
        pool = master.pool
        handover = HandOver(
            cwd=master.start_cwd,
            listeners={listener.address.text: listener.fileno() for listener in master.listeners},
            scoreboard_fd=master.scoreboard.fd,
            generation=pool.generation, age=pool.age, target=pool.target,
            configured=master.cfg.workers, workers=pool.handover_workers(),
        )
        kept: list[int] = []
        if master.programs is not None:
            # Programs keep running: the next image adopts them from the record, with their
            # pipes' read ends, which stay open across exec (see programs.adoption).
            try:
                kept = master.programs.hand_over()
            except OSError as exc:
                master.pool.last_reload = ReloadState.failed(f"cannot record the programs: {exc.strerror}")
                master.log.error("Upgrade refused: cannot write the record of running programs: %s; "
                                 "still serving", exc.strerror)
                return
        master.log.info("Upgrading in place: re-executing the master (pid %d), keeping %d program "
                        "pipes", master.pid, len(kept))
        environ = dict(os.environ)
        if master.notify.raw:
            environ["NOTIFY_SOCKET"] = master.notify.raw
        for service in master.services:
            service.close()  # flushes the control API's replies; the new image listens again
        logs.flush()
        try:
            reexec(handover, [*handover.listeners.values(), handover.scoreboard_fd, *kept], environ)
        except OSError as exc:
            master.log.error("Upgrade failed: cannot re-execute %s: %s", command()[0], exc)
