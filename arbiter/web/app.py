"""Finding and importing the user's application, and telling WSGI from ASGI.

APP is `module:attr`, `module:factory()` (called once per process that loads the app) or
`module` alone, which looks for `application`, then `app`, as Gunicorn and Uvicorn users expect.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from arbiter.errors import AppLoadError

_SPEC = re.compile(r"^(?P<module>[\w.]+)(?::(?P<attr>[\w.]+)(?P<call>\(\))?)?$")
_DEFAULT_NAMES = ("application", "app")


def prepare_path(chdir: str | None, pythonpath: Sequence[str]) -> None:
    """Apply `--chdir` and `--pythonpath` the way Gunicorn does: cwd first on sys.path."""
    if chdir:
        os.chdir(chdir)
    for entry in reversed(pythonpath):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def load(spec: str, paste_global: Sequence[str] = ()) -> Callable[..., Any]:
    """Import and return the application named by `spec`.

    `paste:FILE[#NAME]` (what `--paste` sets) is a PasteDeploy app; `paste_global` holds the
    KEY=VALUE pairs of `--paste-global`, its global config.

    Raises:
        AppLoadError: the spec is malformed, the module fails to import (its traceback is in
            `details`), or the attribute is missing or not callable.
    """
    if spec.startswith("paste:"):
        return _load_paste(spec[len("paste:"):], paste_global)
    match = _SPEC.match(spec.strip())
    if match is None:
        raise AppLoadError(
            f"cannot understand APP {spec!r}: expected module:attribute, module:factory() or module"
        )
    module_name, attr, call = match["module"], match["attr"], match["call"]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        # A missing top-level module is the user's typo, not an error inside their code.
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            raise AppLoadError(f"cannot import module {module_name!r}: no such module "
                               f"(sys.path starts with {sys.path[0]!r})") from None
        raise AppLoadError(
            f"failed to import {module_name!r}", details=traceback.format_exc()
        ) from None
    names = [attr] if attr else [name for name in _DEFAULT_NAMES if hasattr(module, name)][:1]
    if not names:
        raise AppLoadError(f"module {module_name!r} has no 'application' or 'app'; name one as {module_name}:NAME")
    app: Any = module
    for part in names[0].split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {names[0]!r}") from None
    if call:
        try:
            app = app()
        except Exception:
            raise AppLoadError(f"app factory {spec!r} raised", details=traceback.format_exc()) from None
    if not callable(app):
        raise AppLoadError(f"{spec!r} is a {type(app).__name__}, not a callable application")
    loaded: Callable[..., Any] = app
    return loaded



def _load_paste(uri: str, paste_global: Sequence[str]) -> Callable[..., Any]:
    try:
        from paste.deploy import loadapp  # type: ignore[import-untyped]
    except ImportError:
        raise AppLoadError("--paste needs PasteDeploy: pip install PasteDeploy") from None
    global_conf = dict(pair.split("=", 1) for pair in paste_global)
    try:
        app: Callable[..., Any] = loadapp(f"config:{uri}", relative_to=os.getcwd(), global_conf=global_conf)
    except Exception:
        raise AppLoadError(f"cannot load the PasteDeploy app {uri!r}", details=traceback.format_exc()) from None
    return app


def is_asgi(app: Any) -> bool:
    """True for an ASGI 3 app (`async def app(scope, receive, send)` or an object with one).

    Decided without calling the app, so the master can decide too under `--preload`.
    """
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the method itself, to test it is a coroutine
    return inspect.iscoroutinefunction(call)
