"""The master: one thread, one selector loop, acting on signals, children and timers.

Each turn: wait on the selector (the signal wake-up socket; later control sockets and program
pipes) for at most a second or until the next timer, act on the recorded signals, reap exited
children, read the scoreboard, and bring the worker pool to its target. Nothing here blocks for
longer than a turn, and no thread is ever started: forking a process that holds threads can
leave a lock held forever in the child.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import logging
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from arbiter import __version__, logs
from arbiter.config import loader as config_loader
from arbiter.config.settings import Config
from arbiter.errors import ArbiterError, ConfigError
from arbiter.events.types import arbiter_event, supervisor_state
from arbiter.master import host, listening, reloader, systemd, upgrade
from arbiter.master import signals as sigs
from arbiter.master.guardian import Guardian
from arbiter.master.pool import WorkerPool
from arbiter.master.reporting import Reports
from arbiter.programs import registry
from arbiter.programs.manager import ProgramManager
from arbiter.web import app as app_loader
from arbiter.web import sockets, workers
from arbiter.web.scoreboard import Scoreboard
from arbiter.web.sockets import Listener

MAX_WAIT = 1.0  # longest select; also how often timeouts are checked
QUICK_STOP = 2.0  # SIGINT/SIGQUIT: how long workers get before SIGKILL
HOUSEKEEPING = 0.01  # at most this long between bookkeeping passes when I/O keeps the loop busy
SUSPEND_GAP = 3.0  # a select this much longer than asked means the master itself was stopped


class Service(Protocol):
    """Something that lives in the master's loop beside the workers (the control server)."""

    def start(self) -> None: ...
    def tick(self) -> None: ...
    def next_deadline(self) -> float | None: ...
    def close_in_child(self) -> None: ...
    def close(self) -> None: ...


class Master:
    """Runs the web workers (and, through the same loop, everything else the master serves).

    Hooks receive this object as `server`; `cfg`, `log`, `pid` and `num_workers` are there as in
    Gunicorn.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        reload_config: Callable[[], Config] | None = None,
        start_cwd: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.start_cwd = start_cwd or os.getcwd()  # where relative paths meant something
        self.clock = clock
        self.log = logging.getLogger("arbiter.error")
        self.pid = os.getpid()
        self.listeners: list[Listener] = []
        self.preloaded: Callable[..., Any] | None = None
        self.selector = selectors.DefaultSelector()
        self.signals = sigs.SignalQueue()
        self.notify = systemd.Notifier(os.environ)
        self.reports = Reports()
        self.handover = upgrade.take(os.environ)
        self.scoreboard = Scoreboard(fd=self.handover.scoreboard_fd if self.handover else None)
        self.pool: WorkerPool
        # Memory limits and autoscaling (docs/guards.md); it reads the pool once run() made it.
        self.guardian = Guardian(cfg, lambda: self.pool, lambda: self.listeners, self._set_target, self.log,
                                 programs=lambda: self.programs)
        # Children that are not web workers (the upgrade check), with what to do when they exit.
        self._aux: dict[int, Callable[[int], None]] = {}
        self.upgrader = upgrade.Upgrader(self)
        self._reloader: reloader.Watcher | None = None
        # Things that live in this loop beside the workers (the control server): each has
        # start(), tick(), next_deadline(), close_in_child() and close().
        self.services: list[Service] = []
        self._soon: collections.deque[Callable[[], None]] = collections.deque()
        self.programs: ProgramManager | None = None
        self.stopping = False
        self.graceful = True
        self.exit_code = 0
        self._stop_deadline = 0.0
        self._killed_at_deadline = False
        self._awake_since = 0.0
        self._next_wake = 0.0  # the first turn does its housekeeping at once
        self._next_housekeeping = 0.0
        self._next_full = 0.0  # when bookkeeping other than the guards' samples is next due
        self._next_reap = 0.0
        self._child_exited = False

    @property
    def num_workers(self) -> int:
        return self.pool.target

    # -- start and run -----------------------------------------------------------------------

    def run(self) -> int:
        """Bind, preload, then serve until stopped; returns the process exit status.

        Raises:
            BindError: a listening address cannot be bound.
            AppLoadError: under --preload, the app cannot be imported.
        """
        if self.cfg.wsgi_app:
            self.cfg = self._checked(self.cfg)  # a bad -k is a usage error, found before anything starts
        hook = self.cfg.hook("on_starting")
        if hook:
            hook(self)
        host.raise_limits(self.cfg.minfds, self.cfg.minprocs, self.log)
        if self.cfg.reload:
            self._reloader = reloader.Watcher(self)
        if self.cfg.wsgi_app:
            with host.socket_umask(self.cfg.umask):
                self.cfg, self.listeners = listening.acquire(self.cfg, self.handover, self.log)
        started: list[Service] = []
        try:
            if self.cfg.preload_app and self.cfg.wsgi_app:
                self.preloaded = app_loader.load(self.cfg.wsgi_app, self.cfg.raw_paste_global_conf)
            for service in self.services:
                service.start()
                started.append(service)
        except BaseException:
            for service in started:
                service.close()
            self._close_listeners(unlink=True)
            raise
        self.pool = WorkerPool(
            cfg=self.cfg, server=self, listeners=self.listeners, scoreboard=self.scoreboard,
            close_in_child=self._close_in_child, preloaded=self.preloaded, log=self.log, clock=self.clock,
        )
        if self.cfg.wsgi_app:
            workers.preimport(self._worker_class())
            self.pool.announce_choice()
        else:
            self.pool.target = 0  # programs only: Arbiter as a supervisord
        self.signals.install(self.selector)
        host.write_pidfile(self.cfg.pidfile, self.pid)
        self._log_start()
        # Always present, even empty: `arbiter ctl update` may add programs later.
        child_env: dict[str, str] = {}
        for service in self.services:  # the control server says where programs find it
            child_env.update(getattr(service, "child_environment", dict)())
        self.programs = ProgramManager(self.cfg.programs, self.cfg.groups, self.selector, self.log,
                                       clock=self.clock, childlogdir=self.cfg.childlogdir,
                                       record_path=registry.record_path(self.cfg, self.start_cwd), master_pid=self.pid,
                                       child_env=child_env, upgraded=self.handover is not None)
        self.pool.emit = self.event
        if self.handover is None:  # after an in-place upgrade the listeners know it runs
            self.programs.publish(supervisor_state("RUNNING"))
        self.programs.start_autostart()
        if self.handover is not None:
            self.pool.adopt(self.handover, self.cfg.workers)
            self.log.info("Upgraded in place (pid %d): adopted %d workers", self.pid, len(self.pool.workers))
            self.pool.begin_reload()
        hook = self.cfg.hook("when_ready")
        if hook:
            hook(self)
        if self.cfg.wsgi_app:
            # Objects created by the imports so far (the preloaded app, the server modules
            # preimported above) never change again; keeping the collector off them keeps
            # their pages shared with every forked worker instead of copied on write.
            gc.freeze()
        # The CLI started us with the collector off (arbiter/__main__.py); on from here, in the
        # master and in every worker it forks.
        gc.enable()
        try:
            while not self._finished():
                self.turn()
        finally:
            self._shutdown()
        return self.exit_code

    def _log_start(self) -> None:
        self.log.info("Starting arbiter %s", __version__)
        for level, message in config_loader.startup_messages(self.cfg):
            self.log.log(level, "%s", message)
        scheme = "https" if self.cfg.is_ssl else "http"
        for listener in self.listeners:
            self.log.info("Listening at: %s (%s)", listener.url(scheme), self.pid)
        if self.cfg.wsgi_app and self._worker_class() != "auto":
            # Under `auto` with no --preload, the first worker of a generation says which class
            # it chose, once it has imported the app (see `WorkerPool.announce_choice`).
            self.log.info("Using worker: %s", self._worker_class())

    def _checked(self, cfg: Any) -> Any:
        """`cfg` with its worker class resolved to our name (aliases, `--threads`).

        Raises:
            ConfigError: an unknown, refused or uninstalled class, or gevent with --preload.
        """
        name = workers.check(cfg.worker_class, threads=cfg.threads, preload=cfg.preload_app)
        return dataclasses.replace(cfg, worker_class=name) if name != cfg.worker_class else cfg

    def _worker_class(self) -> str:
        """The class the workers use; `auto` only while no worker has imported the app."""
        if self.cfg.worker_class == "auto" and self.preloaded is not None:
            return workers.pick("auto", app_loader.is_asgi(self.preloaded), self.cfg.threads)
        return str(self.cfg.worker_class)

    def turn(self) -> None:
        """One loop turn. Public so tests and a future embedding can drive it."""
        before = self.clock()
        wait = max(0.0, self._next_wake - before)
        events = self.selector.select(wait)
        now = self.clock()
        if now - before > wait + SUSPEND_GAP:
            self.log.warning("Master was suspended for %.1f s; worker timeouts restart from now", now - before - wait)
            self._awake_since = now
        for key, mask in events:
            key.data(key, mask)
        received = self.signals.pop_all()
        for sig in received:
            self._dispatch(sig)
        queued = bool(self._soon)
        while self._soon:
            self._soon.popleft()()
        # A turn woken only by I/O (a program writing flat out wakes the loop many thousand
        # times a second) leaves the bookkeeping below to a turn at most HOUSEKEEPING later.
        if not (events or received or queued) and now < self._next_full:
            self._sample(now)  # woken for the guards' samples alone
        elif received or queued or now >= self._next_housekeeping:
            self._housekeeping(now)
        elif events:
            # The I/O may have set new deadlines (a paced pipe to re-arm): the next pass, which
            # recomputes them, must not wait for the old wake-up time.
            self._next_wake = min(self._next_wake, self._next_housekeeping)
            self._next_full = min(self._next_full, self._next_housekeeping)

    def _housekeeping(self, now: float) -> None:
        if self._child_exited or now >= self._next_reap:
            self._child_exited = False
            self._next_reap = now + MAX_WAIT  # in case a SIGCHLD was ever lost
            self._reap()
        if self.programs is not None:
            self.programs.tick()
            self.programs.tick_events(time.time())  # TICK_* on wall-clock boundaries
        for service in self.services:
            service.tick()
        now = self.clock()
        self.pool.check(now, self._awake_since)
        if self.stopping:
            if now >= self._stop_deadline and self.pool.workers and not self._killed_at_deadline:
                self._killed_at_deadline = True
                self.pool.kill_all()
        else:
            self.guardian.tick(now)
            self.pool.manage(now)
            self.upgrader.tick(now)
            self.reports.tick(self.pool, self.notify, self.event)
        self._next_housekeeping = now + HOUSEKEEPING
        self._next_full = now + self._wait(now, samples=False)
        # Never before the next pass: a due deadline must not make I/O-only turns spin.
        self._next_wake = max(now + self._wait(now), self._next_housekeeping)

    def _sample(self, now: float) -> None:
        """A turn for the guards' samples only (the autoscaler's, four a second): a whole
        housekeeping pass each time cost ~0.3 ms of CPU, taken from the workers when they share
        a CPU with the master. A decision to scale gets its pass at once."""
        target = self.pool.target
        if not self.stopping:
            self.guardian.tick(now)
        if self.pool.target != target:
            self._housekeeping(now)
            return
        self._next_wake = max(now + self._wait(now), now + HOUSEKEEPING)

    def event(self, name: str, body: str = "", **fields: object) -> None:
        """Publish one of Arbiter's own ARBITER_* events to the listeners that subscribe to it."""
        if self.programs is not None:
            self.programs.publish(arbiter_event(name, body=body, **fields))

    def attach(self, service: Service) -> None:
        """Run `service` in this loop (before run()): started after the sockets are bound,
        ticked every turn, closed at exit, and closed without cleanup in forked workers."""
        self.services.append(service)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the loop's next turn. How the control API changes anything: its handlers
        queue work here rather than touch the master's state themselves."""
        self._soon.append(fn)
        self.signals.wake()

    def adopt_child(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """Have the loop reap `pid` (a child that is not a web worker) and call `on_exit(status)`."""
        self._aux[pid] = on_exit

    def _wait(self, now: float, samples: bool = True) -> float:
        """How long the loop may sleep; `samples=False`: leaving out the guards' samples."""
        programs = self.programs.next_deadline() if self.programs is not None else None
        guards = self.guardian.next_deadline(now) if samples else None
        candidates = [self.pool.next_deadline(), programs, guards, *(s.next_deadline() for s in self.services)]
        deadlines = [d for d in candidates if d is not None]
        if self.stopping:
            deadlines.append(self._stop_deadline)
        wait = min([MAX_WAIT] + [d - now for d in deadlines])
        return max(0.0, wait)

    def _finished(self) -> bool:
        if not self.stopping or self.pool.workers:
            return False
        return self.programs is None or self.programs.all_stopped()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self._aux:
                self._aux.pop(pid)(status)
                continue
            if self.programs is not None and self.programs.owns(pid):
                self.programs.child_exited(pid, status)
                continue
            halt = self.pool.exited(pid, status)
            if halt is not None:
                self.stop(graceful=False, exit_code=halt)

    # -- signals -----------------------------------------------------------------------------

    def _dispatch(self, sig: int) -> None:
        handler = getattr(self, "handle_" + sigs.name(sig)[3:].lower(), None)
        if handler is not None:
            handler()

    def handle_chld(self) -> None:
        self._child_exited = True

    def handle_term(self) -> None:
        self.log.info("Handling signal: term")
        self.stop(graceful=True)

    def handle_int(self) -> None:
        self.log.info("Handling signal: int")
        self.stop(graceful=False)

    def handle_quit(self) -> None:
        self.log.info("Handling signal: quit")
        self.stop(graceful=False)

    def handle_hup(self) -> None:
        self.log.info("Handling signal: hup")
        self.reload()  # with --preload, an in-place upgrade: new code loads only in a new image

    def handle_usr2(self) -> None:
        self.log.info("Handling signal: usr2")
        self.upgrade()

    def handle_ttin(self) -> None:
        self.log.info("Handling signal: ttin")
        self.scale(self.pool.target + 1)  # logs "Workers: N -> N+1"

    def handle_ttou(self) -> None:
        self.log.info("Handling signal: ttou")
        self.scale(self.pool.target - 1)

    def handle_usr1(self) -> None:
        self.log.info("Handling signal: usr1 (reopening log files)")
        logs.reopen()
        self.pool.signal_all(signal.SIGUSR1)
        if self.programs is not None:
            self.programs.reopen_logs()

    def handle_winch(self) -> None:
        if not self.cfg.daemon:
            self.log.debug("SIGWINCH ignored: not daemonized")
            return
        self.log.info("Handling signal: winch (stopping workers; the master keeps its sockets)")
        self.scale(0, minimum=0)

    # -- operations (also the control API's, later) ------------------------------------------

    def scale(self, count: int, minimum: int = 1) -> None:
        if self.stopping:
            return
        old, new = self.pool.target, max(minimum, count)
        if new == old:
            self.log.info("Workers: staying at %d%s", old, " (the minimum)" if count < minimum else "")
            return
        self.log.info("Workers: %d -> %d", old, new)
        self._set_target(new)
        self.guardian.floor_moved(new)  # with --max-workers, the count asked for is the floor

    def _set_target(self, new: int) -> None:
        """Set the number of workers the pool aims for (the autoscaler's way too)."""
        old = self.pool.target
        self.pool.target = new
        hook = self.cfg.hook("nworkers_changed")
        if hook:
            hook(self, new, old)

    def reload(self) -> str | None:
        """Reread the config and roll every worker over to a new generation (with --preload:
        upgrade in place). Returns why it was refused, or None."""
        if self.stopping:
            return "the master is stopping"
        if self.cfg.preload_app:
            self.upgrade()
            return None
        if self.reload_config is not None:
            try:
                cfg = self.reload_config()
            except ConfigError as exc:
                self.log.error("Reload refused, the config has an error (still serving the old one): %s", exc)
                return f"the config has an error: {exc}"
            try:
                cfg = self._checked(cfg)
            except ConfigError as exc:
                self.log.error("Reload refused (still serving the old config): %s", exc)
                return str(exc)
            if cfg.bind != self.cfg.bind:
                try:
                    with host.socket_umask(cfg.umask):
                        self.listeners = sockets.rebind(self.listeners, cfg.bind, cfg.backlog, cfg.reuse_port)
                except ArbiterError as exc:
                    self.log.error("Reload refused (still serving the old config): %s", exc)
                    return str(exc)
                self.pool.listeners = self.listeners
                for listener in self.listeners:
                    self.log.info("Listening at: %s (%s)", listener.url("https" if cfg.is_ssl else "http"), self.pid)
            if cfg.workers != self.cfg.workers:
                self.scale(cfg.workers)
            if cfg.worker_class != self.cfg.worker_class:
                workers.preimport(cfg.worker_class)
                if cfg.worker_class != "auto":
                    self.log.info("Using worker: %s", cfg.worker_class)
            self.cfg = self.pool.cfg = cfg
            self.guardian.configure(cfg)
        if self.pool.target == 0:  # after WINCH, HUP brings the workers back, as in Gunicorn
            self.scale(self.cfg.workers)
        self._reopen_logs()
        hook = self.cfg.hook("on_reload")
        if hook:
            hook(self)
        self.pool.begin_reload()
        return None

    def _reopen_logs(self) -> None:
        """Apply loglevel, errorlog and accesslog again (a HUP's promise, changed or not). A log
        that cannot be opened keeps the old ones and is reported there: never fatal on reload."""
        try:
            logs.setup(self.cfg)
        except OSError as exc:
            self.log.error("Reload: cannot open log file %s: %s; logging continues as before",
                           exc.filename, exc.strerror)

    def upgrade(self) -> None:
        """Check that the new code loads (in a child), then re-execute the master in place."""
        if not self.stopping:
            self.upgrader.start()

    def stop(self, graceful: bool = True, exit_code: int = 0) -> None:
        """Begin stopping: graceful lets in-flight requests finish within graceful_timeout."""
        if exit_code:
            self.exit_code = exit_code
        now = self.clock()
        if self.stopping and (graceful or not self.graceful):
            return
        self.stopping = True
        self.graceful = graceful
        self.notify.stopping()
        self._close_listeners(unlink=False)
        if self.programs is not None:
            self.programs.publish(supervisor_state("STOPPING"))
            self.programs.stop_all()
        if graceful:
            self.pool.stop_all(now)
            self._stop_deadline = now + self.cfg.graceful_timeout
        else:
            self.pool.stop_all(now, signal.SIGQUIT)
            self._stop_deadline = now + min(QUICK_STOP, self.cfg.graceful_timeout or QUICK_STOP)

    # -- plumbing ----------------------------------------------------------------------------

    def _close_in_child(self) -> None:
        """In a forked worker: drop what belongs to the master alone (its signal socket, its
        selector and everything in it: program pipes, the watcher's pipe)."""
        self.signals.close_in_child()
        for service in self.services:
            service.close_in_child()
        for key in list(self.selector.get_map().values()):
            try:
                os.close(key.fd)
            except OSError:
                pass
        self.selector.close()

    def _close_listeners(self, unlink: bool) -> None:
        for listener in self.listeners:
            listener.close(unlink=unlink)

    def _shutdown(self) -> None:
        if self._reloader is not None:
            self._reloader.close()
        for service in self.services:
            service.close()
        if self.programs is not None and self.programs.all_stopped():
            self.programs.close()
        if self.pool.workers:  # an exception escaped the loop: leave no worker behind
            self.pool.kill_all()
            for pid in list(self.pool.workers):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        self._close_listeners(unlink=True)
        hook = self.cfg.hook("on_exit")
        if hook:
            hook(self)
        host.remove_pidfile(self.cfg.pidfile, self.pid)
        self.pool.close()
        self.log.info("Shutting down: Master")
        sys.stdout.flush()


