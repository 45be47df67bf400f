"""Choosing the worker class: checked in the master before any socket is bound, Gunicorn's
spellings, `--threads`, refused classes, and the `Using worker:` line."""

from __future__ import annotations

import signal
import socket
import textwrap
from collections.abc import Iterator

import pytest
from conftest import APPS, ROOT, run_arbiter

from arbiter.errors import ConfigError
from arbiter.web import workers


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port we hold: a master that binds before checking -k fails with 'address in use' (exit 1)
    instead of the class error (exit 2), so these tests also prove the order."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def _refused(args: list[str], port: int, env: dict[str, str] | None = None) -> str:
    result = run_arbiter([*args, "-b", f"127.0.0.1:{port}"], env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "address already in use" not in output and "Listening at" not in output, output
    assert "Traceback" not in output, output
    return output


def test_unknown_class_exits_2_before_binding_with_the_list(held_port):
    output = _refused(["wsgi_app:app", "-k", "no_such_worker"], held_port)
    assert "unknown worker class 'no_such_worker'" in output
    assert "sync, gthread, gevent (pip install 'arbiter[gevent]'), uvicorn, auto, or module:Class" in output


def test_custom_class_that_cannot_be_imported_exits_2_before_binding(held_port):
    output = _refused(["wsgi_app:app", "-k", "no_such_module.Worker"], held_port)
    assert "cannot load worker class 'no_such_module.Worker'" in output and "gevent" in output


@pytest.mark.parametrize("name,why", [
    ("eventlet", "deprecated by its own maintainers"),
    ("gunicorn.workers.geventlet.EventletWorker", "deprecated by its own maintainers"),
    ("tornado", "relic"),
    ("gunicorn.workers.gtornado.TornadoWorker", "relic"),
])
def test_eventlet_and_tornado_are_refused_with_the_reason_and_the_alternatives(held_port, name, why):
    output = _refused(["wsgi_app:app", "-k", name], held_port)
    assert why in output
    assert "-k gevent" in output and "-k gthread" in output


def test_gevent_not_installed_names_the_extra(held_port, tmp_path):
    # A real import failure: an import hook (loaded by `site` at start-up) makes gevent unimportable.
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""\
        import sys

        class HideGevent:
            def find_spec(self, name, path=None, target=None):
                if name == "gevent" or name.startswith("gevent."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, HideGevent())
    """))
    env = {"PYTHONPATH": f"{tmp_path}:{APPS}:{ROOT}"}
    output = _refused(["wsgi_app:app", "-k", "gevent"], held_port, env=env)
    assert "needs the gevent package, which is not installed: pip install 'arbiter[gevent]'" in output


def test_gevent_with_preload_is_refused_at_start(held_port):
    pytest.importorskip("gevent")
    output = _refused(["gevent_app:app", "-k", "gevent", "--preload"], held_port)
    assert "--preload with -k gevent is refused" in output and "never monkey-patched" in output


def test_check_config_checks_the_worker_class():
    result = run_arbiter(["wsgi_app:app", "-k", "tornado", "--check-config"])
    assert result.returncode == 2 and "relic" in result.stderr


# -- names ----------------------------------------------------------------------------------------

GUNICORN_SPELLINGS = {
    "sync": "sync",
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gthread": "gthread",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gevent": "gevent",
    "gevent_wsgi": "gevent",
    "gevent_pywsgi": "gevent",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent",
    "egg:gunicorn#gevent": "gevent",
    "asgi": "uvicorn",
    "gunicorn.workers.gasgi.ASGIWorker": "uvicorn",
    "uvicorn.workers.UvicornWorker": "uvicorn",
    "uvicorn_worker.UvicornWorker": "uvicorn",
}


def test_every_class_gunicorn_bundles_is_mapped_or_refused():
    gunicorn_workers = pytest.importorskip("gunicorn.workers")
    for name, path in gunicorn_workers.SUPPORTED_WORKERS.items():
        for spelling in (name, path):
            assert workers.canonical(spelling) in workers.WORKER_CLASSES or spelling in workers.REFUSED, spelling


@pytest.mark.parametrize("spelling,ours", sorted(GUNICORN_SPELLINGS.items()))
def test_gunicorn_spellings_resolve_to_our_classes(spelling, ours):
    assert workers.check(spelling) == ours
    # A sync worker with threads is a gthread worker, whatever it is called (Gunicorn's rule).
    assert workers.check(spelling, threads=4) == ("gthread" if ours == "sync" else ours)


def test_preload_is_refused_for_a_custom_gevent_subclass(tmp_path, monkeypatch):
    pytest.importorskip("gevent")
    (tmp_path / "my_gevent_worker.py").write_text(
        "from arbiter.web.workers.gevent import GeventWorker\n\nclass Mine(GeventWorker):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert workers.check("my_gevent_worker:Mine") == "my_gevent_worker:Mine"
    with pytest.raises(ConfigError, match="cannot be used with --preload"):
        workers.check("my_gevent_worker:Mine", preload=True)


# -- what the log says -----------------------------------------------------------------------------


@pytest.mark.parametrize("args,line", [
    (["wsgi_app:app", "--threads", "4"], "Using worker: gthread (for a WSGI app)"),
    (["wsgi_app:app"], "Using worker: sync (for a WSGI app)"),
    (["asgi_app:app", "--threads", "4"], "Using worker: uvicorn (for an ASGI app)"),
    (["wsgi_app:app", "--preload"], "Using worker: sync"),
    (["wsgi_app:app", "-k", "gunicorn.workers.sync.SyncWorker", "--threads", "2"], "Using worker: gthread"),
    (["asgi_app:app", "-k", "uvicorn_worker.UvicornWorker"], "Using worker: uvicorn"),
    (["gevent_app:app", "-k", "gunicorn.workers.ggevent.GeventWorker"], "Using worker: gevent"),
])
def test_using_worker_names_the_class_in_use(arbiter, args, line):
    if "gevent_app:app" in args:
        pytest.importorskip("gevent")
    master = arbiter([*args, "-w", "2"])
    master.wait_ready(2)
    log = master.log()
    assert log.count(line) == 1, log
    assert "Using worker: auto" not in log


def test_hup_to_an_unknown_class_is_refused_and_the_old_workers_serve(arbiter, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text('worker_class = "sync"\n')
    master = arbiter(["wsgi_app:app", "-c", str(conf), "-w", "1"])
    before = master.wait_ready(1)
    conf.write_text('worker_class = "tornado"\n')
    master.signal(signal.SIGHUP)
    master.wait_log(r"Reload refused \(still serving the old config\): worker class 'tornado' is not supported")
    assert master.workers() == before and master.get("/")[0] == 200
