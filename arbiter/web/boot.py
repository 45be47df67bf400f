"""What a freshly forked web worker does before it serves: the child side of spawning.

Kept apart from the pool so the master's bookkeeping and the child's start-up read separately.
This code runs in the child only and always ends in `os._exit`.
"""

from __future__ import annotations

import gc
import grp
import logging
import os
import pwd
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from arbiter.config.settings import Config
from arbiter.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR, AppLoadError, WorkerBootError
from arbiter.web import app as app_loader
from arbiter.web import workers
from arbiter.web.scoreboard import Slot
from arbiter.web.workers.base import Worker

log = logging.getLogger("arbiter.error")


def drop_privileges(user: str | None, group: str | None, initgroups: bool = False) -> None:
    """Become `user` (and `group`, else the user's primary group).

    With `initgroups` (Gunicorn's --initgroups) the worker gets the user's supplementary groups;
    without it, none: Gunicorn would leave the root's own there, which no worker should keep.
    Order matters: supplementary groups and gid while still root, the uid last.
    """
    if not user and not group:
        return
    uid = _uid(user) if user else os.getuid()
    gid = _gid(group) if group else (pwd.getpwuid(uid).pw_gid if user else os.getgid())
    if os.getuid() == uid and os.getgid() == gid:
        return
    if user and initgroups:
        os.initgroups(pwd.getpwuid(uid).pw_name, gid)
    elif os.geteuid() == 0:
        os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _uid(user: str) -> int:
    try:
        return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise WorkerBootError(f"--user {user!r}: no such user") from None


def _gid(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise WorkerBootError(f"--group {group!r}: no such group") from None


def report_load_error(exc: AppLoadError, traceback_turn_fd: int) -> None:
    """Print the app's traceback once per generation, however many workers fail alike.

    The master puts one byte in a pipe per generation; the worker that reads it prints the
    whole story, the others one line. A pipe read is atomic, so exactly one worker wins.
    """
    # This worker exits right after; but the master, seeing a sibling fail first, may abandon
    # the generation and SIGTERM it while it still writes the traceback, the one line that says
    # why. Hold those signals until the exit (SIGKILL still ends a stuck worker).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
    try:
        won = bool(os.read(traceback_turn_fd, 1))
    except (BlockingIOError, OSError):
        won = False
    if won:
        log.error("%s\n%s", exc, exc.details.rstrip()) if exc.details else log.error("%s", exc)
    else:
        log.info("Worker (pid:%d) could not load the app either", os.getpid())


def announce_choice(chosen: str, app_is_asgi: bool, announce_fd: int) -> None:
    """Log the class `auto` chose, once per generation: only the worker that reads the
    master's byte from the pipe says it (the master cannot know without importing the app)."""
    try:
        won = bool(os.read(announce_fd, 1))
    except OSError:  # BlockingIOError: another worker said it already; EBADF: no pipe
        won = False
    if won:
        log.info("Using worker: %s (for %s app)", chosen, "an ASGI" if app_is_asgi else "a WSGI")


def _import_app(spec: str, cfg: Config) -> Callable[..., Any]:
    """The app, imported the way the master's own start-up is (arbiter/__main__.py): with the
    cyclic collector off, its objects then frozen, the collector back on.

    An import builds long-lived objects and next to no garbage; collecting during it, or once
    after it over everything it built, is wasted work: ~7% of a FastAPI app's import here
    (benchmarks/README.md, "Boot"). The price: a reference cycle the import itself dropped is
    never collected, as under --preload, where the master freezes the app it imported.

    Raises:
        AppLoadError: as `app.load`.
    """
    gc.disable()
    try:
        app = app_loader.load(spec, cfg.raw_paste_global_conf)
        gc.freeze()
        return app
    finally:
        gc.enable()


def run_worker(
    *,
    cfg: Config,
    age: int,
    ppid: int,
    generation: int,
    slot: Slot,
    sockets: Sequence[socket.socket],
    preloaded: Callable[..., Any] | None,
    traceback_turn_fd: int,
    announce_fd: int = -1,
    post_fork: Callable[[], None],
    on_exit: Callable[[Worker], None],
    as_mold: Callable[[Worker], int] | None = None,
) -> None:
    """Load the app, pick the worker class, serve; exit with Gunicorn's codes. Never returns.

    `as_mold` (reforking): what a worker the master promoted does once it has stopped serving;
    it returns the exit code when the mold is told to stop.
    """
    code = 0
    booted = False
    worker = None
    try:
        post_fork()
        for pair in cfg.raw_env:
            key, _, value = pair.partition("=")
            os.environ[key] = value
        drop_privileges(cfg.user, cfg.group, cfg.initgroups)
        if cfg.spew:
            from arbiter.web.spew import spew

            spew()
        chosen = workers.for_threads(workers.canonical(cfg.worker_class), cfg.threads)
        # A named class is loaded before the app: gevent's must patch before any app import.
        cls = None if chosen == "auto" else workers.load(chosen)
        prepare = getattr(cls, "prepare_process", None)  # a custom class may not derive from ours
        if prepare is not None:
            prepare()
        if preloaded is not None:
            app = preloaded
        elif cfg.wsgi_app:
            app = _import_app(cfg.wsgi_app, cfg)
        else:  # the master forks no worker without an app; say so if one ever did
            raise WorkerBootError("no app to serve (wsgi_app is not set)")
        app_is_asgi = app_loader.is_asgi(app)
        if cls is None:
            chosen = workers.pick(chosen, app_is_asgi, cfg.threads)
            cls = workers.load(chosen)
            announce_choice(chosen, app_is_asgi, announce_fd)
        workers.fits(cls, chosen, app_is_asgi)
        if cfg.proxy_protocol != "off" and getattr(cls, "interface", "wsgi") == "asgi":
            raise WorkerBootError("--proxy-protocol is not supported by the uvicorn worker yet; "
                                  "serve a WSGI app with -k sync or gthread, or let the proxy send X-Forwarded-For")
        worker = cls(age=age, ppid=ppid, sockets=sockets, app=app, cfg=cfg, slot=slot, generation=generation)
        booted = True
        worker.init_process()
        if as_mold is not None and worker.promoted and worker.alive:
            code = as_mold(worker)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except AppLoadError as exc:
        report_load_error(exc, traceback_turn_fd)
        code = APP_LOAD_ERROR
    except WorkerBootError as exc:
        log.error("Worker failed to boot: %s", exc)
        code = WORKER_BOOT_ERROR
    except BaseException:
        log.error("Exception in worker process:\n%s", traceback.format_exc().rstrip())
        code = 1 if booted else WORKER_BOOT_ERROR
    finally:
        if worker is not None:
            log.info("Worker exiting (pid: %s)", os.getpid())
            try:
                on_exit(worker)
            except BaseException:
                log.exception("worker_exit hook failed")
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
