"""Worker classes by name. Looked up lazily so that an unused worker's imports never load.

Two moments: `check` runs in the master before any socket is bound (a bad `-k` is a usage
error, exit 2, with the list of classes and the extra to install), and `resolve` runs in each
worker once the app is imported (`auto` needs the app to know WSGI from ASGI).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from arbiter.errors import ConfigError, WorkerBootError

WORKER_CLASSES: dict[str, str] = {
    "sync": "arbiter.web.workers.sync:SyncWorker",
    "gthread": "arbiter.web.workers.gthread:ThreadWorker",
    "gevent": "arbiter.web.workers.gevent:GeventWorker",
    "uvicorn": "arbiter.web.workers.asgi:UvicornWorker",
}
# What a built-in class needs beyond Arbiter's own dependencies: (module, the extra to install).
NEEDS: dict[str, tuple[str, str]] = {
    "gevent": ("gevent", "gevent"),
}
# Names Gunicorn and Uvicorn users type for the same classes (Gunicorn's SUPPORTED_WORKERS, its
# dotted paths, uvicorn's and uvicorn-worker's). gevent_wsgi and gevent_pywsgi are gevent's own
# HTTP server in Gunicorn; here every gevent spelling gets the one gevent worker, on our parser.
ALIASES: dict[str, str] = {
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gevent_wsgi": "gevent",
    "gevent_pywsgi": "gevent",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent",
    "asgi": "uvicorn",
    "gunicorn.workers.gasgi.ASGIWorker": "uvicorn",
    "uvicorn.workers.UvicornWorker": "uvicorn",
    "uvicorn.workers.UvicornH11Worker": "uvicorn",
    "uvicorn_worker.UvicornWorker": "uvicorn",
    "uvicorn_worker.UvicornH11Worker": "uvicorn",
}
_SUGGEST = "use -k gevent (many connections per worker on blocking code) or -k gthread (a thread pool)"
# Classes Gunicorn has (or had) that Arbiter refuses, and why.
REFUSED: dict[str, str] = {
    "eventlet": "eventlet is deprecated by its own maintainers (bug fixes only, new use discouraged) "
                f"and Gunicorn 27 dropped its worker; {_SUGGEST}",
    "tornado": "Gunicorn's tornado worker is a relic (a WSGI app in Tornado's WSGIContainer on one "
               f"single-threaded loop, or a Tornado app, which has its own server); {_SUGGEST}",
}
REFUSED["gunicorn.workers.geventlet.EventletWorker"] = REFUSED["eventlet"]
REFUSED["gunicorn.workers.gtornado.TornadoWorker"] = REFUSED["tornado"]


def canonical(name: str) -> str:
    """Our name for `name`: an alias becomes the class it means; anything else is kept."""
    name = name.strip()
    if name.startswith("egg:gunicorn#"):  # Gunicorn's old entry-point spelling
        name = name[len("egg:gunicorn#"):]
    return ALIASES.get(name, name)


def for_threads(name: str, threads: int) -> str:
    """Gunicorn's rule: a sync worker asked for more than one thread is a gthread worker."""
    return "gthread" if name == "sync" and threads > 1 else name


def _choices() -> str:
    names = [f"{name} (pip install 'arbiter[{NEEDS[name][1]}]')" if name in NEEDS else name for name in WORKER_CLASSES]
    return ", ".join(names) + ", auto, or module:Class"


def _target(name: str) -> tuple[str, str]:
    target = WORKER_CLASSES.get(name, name)
    if ":" in target:
        module_name, _, attr = target.partition(":")
    else:
        module_name, _, attr = target.rpartition(".")
    return module_name, attr


def check(name: str, *, threads: int = 1, preload: bool = False) -> str:
    """Resolve `-k NAME` in the master, before any socket is bound; returns our name for it.

    A built-in class is checked for its optional dependency (without importing it: gevent must
    not be loaded into the master); a custom `module:Class` is imported and looked up, as
    Gunicorn does. `auto` stays `auto`: which class it means depends on the app.

    Raises:
        ConfigError: the class is unknown, refused, not installed, or does not allow `preload`.
    """
    name = for_threads(canonical(name), threads)
    if name in REFUSED:
        raise ConfigError(f"worker class {name!r} is not supported: {REFUSED[name]}")
    if name == "auto":
        return name
    if name in NEEDS:
        module_name, extra = NEEDS[name]
        try:
            found = importlib.util.find_spec(module_name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(
                f"worker class {name!r} needs the {module_name} package, which is not installed: "
                f"pip install 'arbiter[{extra}]'"
            )
        if preload and name == "gevent":
            raise ConfigError(PRELOAD_GEVENT)
        return name
    if name in WORKER_CLASSES:
        return name
    module_name, attr = _target(name)
    if not module_name or not attr:
        raise ConfigError(f"unknown worker class {name!r}: expected one of {_choices()}")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"cannot load worker class {name!r}: {exc}; the built-in classes are {_choices()}") from None
    except AttributeError:
        raise ConfigError(f"cannot load worker class {name!r}: module {module_name!r} has no {attr!r}; "
                          f"the built-in classes are {_choices()}") from None
    if preload and not getattr(cls, "allows_preload", True):
        raise ConfigError(f"worker class {name!r} cannot be used with --preload: {PRELOAD_GEVENT}")
    return name


PRELOAD_GEVENT = (
    "--preload with -k gevent is refused: the master is never monkey-patched, so the app would be "
    "imported unpatched, and whatever it created at import (sockets, locks, connection pools, "
    "`from time import sleep`) would block the whole worker instead of one greenlet. "
    "Drop --preload (each gevent worker patches, then imports the app), or use -k sync or gthread with --preload."
)


def pick(name: str, app_is_asgi: bool, threads: int = 1) -> str:
    """Our name of the class that serves: `auto` becomes uvicorn for an ASGI app, else sync (or
    gthread with more than one thread)."""
    name = canonical(name)
    if name == "auto":
        name = "uvicorn" if app_is_asgi else "sync"
    return for_threads(name, threads)


def preimport(name: str) -> None:
    """Import worker modules in the master before forking, as Gunicorn does with its worker
    class: each new worker then starts with httptools/uvicorn/uvloop already in memory (shared
    pages) instead of spending 100-300 ms importing them after every fork. Only our own and the
    servers' modules, never app code. `auto` imports both built-in families. For gevent, only
    the HTTP layer it shares with sync: gevent itself stays out of the master, so a worker
    patches before any of gevent's own modules hold a reference to something unpatched."""
    name = canonical(name)
    names = ["sync", "uvicorn"] if name == "auto" else ["sync"] if name == "gevent" else [name]
    for each in names:
        module_name, _attr = _target(each)
        if module_name:
            try:
                importlib.import_module(module_name)
            except ImportError:
                pass  # the worker reports it, with exit code 3, when it resolves the class


def load(name: str) -> type[Any]:
    """The class for `name` (our name, an alias or module:Class), imported.

    Raises:
        WorkerBootError: the class cannot be imported.
    """
    name = canonical(name)
    module_name, attr = _target(name)
    if not module_name:
        raise WorkerBootError(f"unknown worker class {name!r}: expected one of {_choices()}")
    try:
        cls: type[Any] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkerBootError(f"cannot load worker class {name!r}: {exc}") from None
    return cls


def fits(cls: type[Any], name: str, app_is_asgi: bool) -> None:
    """Check that the class serves the app's interface.

    Raises:
        WorkerBootError: a WSGI class for an ASGI app, or the other way round.
    """
    interface = getattr(cls, "interface", "wsgi")
    if (interface == "asgi") != app_is_asgi:
        kind = "an ASGI" if app_is_asgi else "a WSGI"
        fit = "uvicorn" if app_is_asgi else "sync, gthread or gevent"
        raise WorkerBootError(
            f"worker class {name!r} serves {interface.upper()}, but the app is {kind} app; use -k {fit}")


def resolve(name: str, app_is_asgi: bool, threads: int = 1) -> type[Any]:
    """The worker class for `-k NAME` and an app of the given interface.

    Raises:
        WorkerBootError: the class cannot be imported, or does not fit the app.
    """
    name = pick(name, app_is_asgi, threads)
    cls = load(name)
    fits(cls, name, app_is_asgi)
    return cls
