"""Worker classes by name. Looked up lazily so that an unused worker's imports never load."""

from __future__ import annotations

import importlib
from typing import Any

from arbiter.errors import WorkerBootError

WORKER_CLASSES: dict[str, str] = {
    "sync": "arbiter.web.workers.sync:SyncWorker",
    "gthread": "arbiter.web.workers.gthread:ThreadWorker",
    "uvicorn": "arbiter.web.workers.asgi:UvicornWorker",
}
# Names Gunicorn users type for the same classes.
ALIASES: dict[str, str] = {
    "uvicorn.workers.UvicornWorker": "uvicorn",
    "uvicorn_worker.UvicornWorker": "uvicorn",
    "asgi": "uvicorn",
}


def preimport(name: str) -> None:
    """Import worker modules in the master before forking, as Gunicorn does with its worker
    class: each new worker then starts with httptools/uvicorn/uvloop already in memory (shared
    pages) instead of spending 100-300 ms importing them after every fork. Only our own and the
    servers' modules, never app code. `auto` imports both built-in families."""
    name = ALIASES.get(name, name)
    names = ["sync", "uvicorn"] if name == "auto" else [name]
    for each in names:
        target = WORKER_CLASSES.get(each, each)
        module_name = target.partition(":")[0] if ":" in target else target.rpartition(".")[0]
        if module_name:
            try:
                importlib.import_module(module_name)
            except ImportError:
                pass  # the worker reports it, with exit code 3, when it resolves the class


def resolve(name: str, app_is_asgi: bool) -> type[Any]:
    """The worker class for `-k NAME`; `auto` picks by the app's interface.

    Raises:
        WorkerBootError: the class cannot be imported, or does not fit the app.
    """
    name = ALIASES.get(name, name)
    if name == "auto":
        name = "uvicorn" if app_is_asgi else "sync"
    target = WORKER_CLASSES.get(name, name)
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name:
        known = ", ".join(WORKER_CLASSES)
        raise WorkerBootError(f"unknown worker class {name!r}: expected one of {known}, or module:Class")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkerBootError(f"cannot load worker class {name!r}: {exc}") from None
    interface = getattr(cls, "interface", "wsgi")
    if (interface == "asgi") != app_is_asgi:
        kind = "an ASGI" if app_is_asgi else "a WSGI"
        fit = "uvicorn" if app_is_asgi else "sync or gthread"
        raise WorkerBootError(f"worker class {name!r} serves {interface.upper()}, but the app is {kind} app; use -k {fit}")
    return cls
