"""The worker base class: what every web worker does in its own process, whatever it serves.

A worker is forked (never exec'd) by the master, so it inherits the listening sockets and,
under `--preload`, the imported app. Its contract with the master:

- heartbeat through its scoreboard slot (`notify()`) at least once a second while healthy;
  a worker silent for `timeout` seconds is aborted;
- mark itself READY (`ready()`) once it accepts connections, so a rolling reload can count it;
- SIGTERM: stop accepting, finish in-flight requests within `graceful_timeout`, exit 0;
  SIGINT and SIGQUIT: exit at once; SIGABRT (sent on timeout): run `worker_abort`, exit 1;
  SIGUSR1: reopen log files; SIGURG (reforking): stop serving and become the mold, if the class
  can (`refork_safe`), see arbiter/web/mold.py;
- exit by itself when the master dies (parent-death signal, and a ppid check).

Subclasses implement `run()`. A custom worker class is a subclass named on the command line as
`-k package.module:Class`; set `interface` to "wsgi" or "asgi".
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from arbiter import logs
from arbiter.config.settings import Config
from arbiter.errors import ConfigError, WorkerBootError
from arbiter.web.scoreboard import Slot, SlotState

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send `sig` to this process when its parent dies. Best effort elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


class Worker:
    """One web worker process. Attributes are what Gunicorn's hooks are used to finding."""

    interface: ClassVar[Literal["wsgi", "asgi"]] = "wsgi"
    # Whether this class can stop serving and leave only the main thread behind, so that the
    # process can become the mold new workers fork from (reforking). Off for custom classes.
    refork_safe: ClassVar[bool] = False
    # False for a class whose process must be prepared before any app code is imported (gevent
    # monkey-patches): `--preload` would import the app in the master, so it is refused at start.
    allows_preload: ClassVar[bool] = True
    # Signals a worker handles itself; everything else keeps its default.
    SIGNALS: ClassVar[tuple[int, ...]] = (
        signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT, signal.SIGUSR1, signal.SIGURG,
    )

    def __init__(
        self,
        *,
        age: int,
        ppid: int,
        sockets: Sequence[socket.socket],
        app: Callable[..., Any],
        cfg: Config,
        slot: Slot,
        generation: int,
    ) -> None:
        self.age = age
        self.ppid = ppid
        self.sockets = list(sockets)
        self.app = app
        self.wsgi = app  # Gunicorn's name for it, used by some hooks
        self.cfg = cfg
        self.slot = slot
        self.generation = generation
        self.pid = os.getpid()
        self.log = logging.getLogger("arbiter.error")
        self.alive = True
        self.promoted = False  # asked to become the mold: stop serving, then fork on request
        self._retirement_asked = False
        self.max_requests = (
            cfg.max_requests + random.randint(0, cfg.max_requests_jitter) if cfg.max_requests > 0 else sys.maxsize
        )
        # The write end of a pipe the signal handlers poke, so a worker blocked in select wakes
        # at once on SIGTERM; subclasses with a selector register `wakeup_fd`.
        self.wakeup_fd, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    def prepare_process(cls) -> None:
        """Runs in the new worker process before the app is imported (nothing by default)."""

    def init_process(self) -> None:
        """Set up signals and parent watching, run `post_worker_init`, then serve until done."""
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.ppid:  # the master died before prctl took effect
            self.alive = False
            return
        self.init_signals()
        hook = self.cfg.hook("post_worker_init")
        if hook:
            hook(self)
        self.run()

    def run(self) -> None:
        raise NotImplementedError  # abstract

    def init_signals(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)
        # The master handles these; a worker should neither die of them nor act on them.
        for sig in (signal.SIGHUP, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _on_signal(self, sig: int, frame: object) -> None:
        try:
            os.write(self._wakeup_w, b"!")
        except BlockingIOError:
            pass
        if sig == signal.SIGTERM:
            self.handle_exit()
        elif sig == signal.SIGUSR1:
            self.handle_usr1()
        elif sig == signal.SIGABRT:
            self.handle_abort()
        elif sig == signal.SIGURG:
            self.handle_promote()
        else:
            self.handle_quit(sig)

    def handle_exit(self) -> None:
        """SIGTERM: graceful. Subclasses see `alive` turn False and drain."""
        self.alive = False

    def handle_quit(self, sig: int) -> None:
        """SIGINT / SIGQUIT: leave now."""
        if sig == signal.SIGINT:
            hook = self.cfg.hook("worker_int")
            if hook:
                hook(self)
        sys.exit(0)

    def handle_abort(self) -> None:
        """SIGABRT: the master decided we hung. Say where we were, then go."""
        self.alive = False
        hook = self.cfg.hook("worker_abort")
        if hook:
            hook(self)
        sys.exit(1)

    def handle_usr1(self) -> None:
        logs.reopen()

    def handle_promote(self) -> None:
        """SIGURG: the master chose this worker as the mold. A class that cannot stop serving
        cleanly ignores it (the master then gives up on the promotion and replaces it)."""
        if self.refork_safe and self.alive:
            self.promoted = True

    # -- helpers for subclasses ------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext | None:
        """A server TLS context from `certfile` and `keyfile`, or None when TLS is off.

        Raises:
            WorkerBootError: the certificate or key cannot be loaded.
        """
        if not self.cfg.certfile:
            return None
        from arbiter.web import tls

        try:
            # Every TLS setting (arbiter.web.tls); `ssl.SSLContext` is looked up at call time
            # there, so under gevent it is the patched class.
            return tls.server_context(self.cfg)
        except ConfigError as exc:
            raise WorkerBootError(str(exc)) from None

    def notify(self) -> None:
        """Heartbeat: one store into shared memory. Also notices an orphaned worker."""
        self.slot.heartbeat()
        if self.alive and os.getppid() != self.ppid:
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False

    def capacity(self) -> int:
        """How many requests this worker answers at once (the busy ratio's denominator)."""
        return 1

    def ready(self) -> None:
        """Tell the master this worker accepts connections, and how many requests at once."""
        self.slot.set_capacity(max(1, self.capacity()))
        self.slot.set_state(SlotState.READY)

    def draining(self) -> None:
        """Tell the master this worker no longer accepts (it is finishing in-flight work)."""
        self.slot.set_state(SlotState.DRAINING)

    def request_done(self) -> bool:
        """Count one served request. Returns `alive`.

        At `max_requests` the worker does not stop by itself: it asks the master for a
        replacement and keeps serving until the master drains it (SIGTERM) once the replacement
        is ready, so recycling never leaves a gap.
        """
        self.slot.add_request()
        if self.slot.requests >= self.max_requests and not self._retirement_asked:
            self.ask_replacement(f"Max requests reached ({self.max_requests})")
        return self.alive

    def ask_replacement(self, why: str) -> None:
        """Ask the master for a successor (RETIRING), keep serving until it drains us (SIGTERM)."""
        if self._retirement_asked:
            return
        self._retirement_asked = True
        self.log.info("%s; asking for a replacement.", why)
        self.slot.set_state(SlotState.RETIRING)

    def report_request_timeout(self, message: str) -> None:
        """A request ran past `--request-timeout`: log where it was stuck, count it in the slot
        (how the master learns of it, for its log and `/metrics`)."""
        self.log.error("%s", message)
        self.slot.add_request_timeout()

    def drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass
