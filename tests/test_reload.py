"""Zero-downtime operations under load: rolling reload, scaling, recycling, a broken deploy."""

from __future__ import annotations

import concurrent.futures
import signal
import textwrap

import pytest

from load import Load

WORKER_CLASSES = ["uvicorn", "sync", "gthread", "gevent"]
APP_FOR = {"uvicorn": "asgi_app:app", "sync": "wsgi_app:app", "gthread": "wsgi_app:app", "gevent": "wsgi_app:app"}


def _args(kind: str, *extra: str) -> list[str]:
    args = [APP_FOR[kind], "-k", kind, "--log-level", "debug", *extra]
    if kind == "gthread":
        args += ["--threads", "4"]
    return args


def _reload(master, count: int) -> None:
    """HUP, and wait for the master to say this reload (the count-th) is done."""
    master.signal(signal.SIGHUP)
    master.wait_log(r"Reload done: generation", count=count, timeout=30)


@pytest.mark.parametrize("kind", WORKER_CLASSES)
def test_hup_under_load_fails_no_request_and_replaces_every_worker(arbiter, kind):
    master = arbiter(_args(kind, "-w", "3"))
    original = set(master.wait_ready(3))
    with Load(master.port) as load:
        load.wait_for_requests(50)
        for round_ in range(1, 4):
            before = set(master.workers())
            _reload(master, round_)
            load.wait_for_requests(50)
            after = master.wait_workers(lambda w: len(w) == 3)
            assert not before & set(after), f"round {round_}: old workers still running"
        result = load.stop()
    assert result.failures == [], result.failures[:10]
    assert result.ok > 200
    assert not original & set(master.workers())


@pytest.mark.parametrize("kind", ["uvicorn", "sync", "gevent"])
def test_slow_request_in_flight_during_hup_completes(arbiter, kind):
    master = arbiter(_args(kind, "-w", "2"))
    master.wait_ready(2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(master.get, "/sleep?s=2", timeout=20) for _ in range(2)]
        master.wait_log(r"Worker \(pid:\d+\) ready", count=2)
        _reload(master, 1)
        assert [future.result(timeout=20)[0] for future in slow] == [200, 200]


@pytest.mark.parametrize("kind", ["uvicorn", "sync"])
def test_ttin_ttou_under_load(arbiter, kind):
    master = arbiter(_args(kind, "-w", "2"))
    master.wait_ready(2)
    with Load(master.port) as load:
        for sig, count in [(signal.SIGTTIN, 3), (signal.SIGTTIN, 4), (signal.SIGTTOU, 3), (signal.SIGTTOU, 2)]:
            master.signal(sig)
            master.wait_workers(lambda w, count=count: len(w) == count)
            load.wait_for_requests(30)
        result = load.stop()
    assert result.failures == [], result.failures[:10]


@pytest.mark.parametrize("kind", ["uvicorn", "sync"])
def test_max_requests_recycles_without_failures(arbiter, kind):
    master = arbiter(_args(kind, "-w", "2", "--max-requests", "150", "--max-requests-jitter", "50"))
    original = set(master.wait_ready(2))
    with Load(master.port, slow=0) as load:
        master.wait_log(r"Max requests reached", count=3, timeout=60)
        # Each original reached its limit; it goes once its replacement is ready.
        master.wait_workers(lambda w: len(w) == 2 and not original & set(w), timeout=30)
        load.wait_for_requests(100)
        result = load.stop()
    assert result.failures == [], result.failures[:10]
    assert len(result.pids) > 2


def test_broken_deploy_keeps_the_old_generation_serving(arbiter, tmp_path):
    app_dir = tmp_path / "deploy"
    app_dir.mkdir()
    module = app_dir / "deployed_app.py"
    good = textwrap.dedent('''
        import os
        VERSION = "v1"
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": f"pid={os.getpid()} {VERSION}".encode()})
    ''')
    module.write_text(good)
    master = arbiter(["deployed_app:app", "-w", "2", "--chdir", str(app_dir), "--log-level", "debug"])
    old = set(master.wait_ready(2))
    with Load(master.port, slow=0) as load:
        module.write_text("raise ImportError('a broken deploy')\n")
        master.signal(signal.SIGHUP)
        master.wait_log(r"Reload failed: App failed to load\. Generation 2 abandoned; generation 1 keeps serving")
        load.wait_for_requests(50)
        assert set(master.workers()) == old
        module.write_text(good.replace("v1", "v2"))
        _reload(master, 1)
        load.wait_for_requests(50)
        result = load.stop()
    assert result.failures == [], result.failures[:10]
    assert master.get("/")[1].endswith(b" v2")
    assert master.log().count("ImportError: a broken deploy") == 1


@pytest.mark.parametrize("preload", [False, True])
def test_usr2_upgrades_in_place_keeping_the_pid(arbiter, tmp_path, preload):
    app_dir = tmp_path / "deploy"
    app_dir.mkdir()
    module = app_dir / "versioned_app.py"
    source = textwrap.dedent('''
        import os
        VERSION = "v1"
        def app(environ, start_response):
            body = f"pid={os.getpid()} {VERSION}".encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
    ''')
    module.write_text(source)
    extra = ["--preload"] if preload else []
    master = arbiter(["versioned_app:app", "-w", "2", "-k", "gthread", "--chdir", str(app_dir), *extra])
    old = set(master.wait_ready(2))
    with Load(master.port, slow=0) as load:
        module.write_text(source.replace("v1", "v2"))
        master.signal(signal.SIGHUP if preload else signal.SIGUSR2)
        master.wait_log(r"Upgraded in place \(pid \d+\): adopted 2 workers")
        master.wait_log(r"Reload done: generation")
        load.wait_for_requests(50)
        result = load.stop()
    assert result.failures == [], result.failures[:10]
    assert master.proc.poll() is None  # same process, still running: the PID never changed
    new = set(master.wait_workers(lambda w: len(w) == 2))
    assert not old & new
    assert master.get("/")[1].endswith(b" v2")


def test_upgrade_with_broken_code_is_refused(arbiter, tmp_path):
    app_dir = tmp_path / "deploy"
    app_dir.mkdir()
    module = app_dir / "fragile_app.py"
    module.write_text("def app(environ, start_response):\n"
                      "    start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n")
    master = arbiter(["fragile_app:app", "-w", "1", "-k", "gthread", "--chdir", str(app_dir), "--preload"])
    old = master.wait_ready(1)
    module.write_text("raise SyntaxError('half-written deploy')\n")
    master.signal(signal.SIGUSR2)
    master.wait_log(r"Upgrade refused: the new code does not load \(check exited 4\); still serving")
    assert master.workers() == old
    assert master.get("/") == (200, b"ok")


def test_hup_rebinds_a_changed_bind_and_keeps_the_unchanged_socket(arbiter, tmp_path):
    path = tmp_path / "arbiter.toml"
    sock_path = tmp_path / "extra.sock"
    path.write_text('wsgi_app = "asgi_app:app"\nbind = ["127.0.0.1:0"]\nworkers = 1\n')
    master = arbiter(["-c", str(path)], bind=False)
    master.wait_ready(1)
    port = master.port
    path.write_text(f'wsgi_app = "asgi_app:app"\nbind = ["127.0.0.1:0", "unix:{sock_path}"]\nworkers = 1\n')
    _reload(master, 1)
    assert sock_path.exists()
    import http.client
    import socket as socket_mod

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket_mod.socket(socket_mod.AF_UNIX)
            self.sock.connect(str(sock_path))

    conn = UnixConnection("localhost", timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()
    assert master.get("/")[0] == 200  # the original port is the same socket, still there
    assert f"127.0.0.1:{port}" in master.log()



def test_a_broken_deploy_keeps_its_traceback_when_the_master_gives_up_first(arbiter, tmp_path):
    """Both new workers fail to import; the one that wins the traceback token is slow to write it
    (a loaded machine, a slow log pipe: here a log filter the broken module installs) while the
    other exits at once. The master abandons the generation on that first exit and SIGTERMs the
    rest: the winner must still get its traceback out, or the operator never sees why."""
    app_dir = tmp_path / "deploy"
    app_dir.mkdir()
    module = app_dir / "deployed_app.py"
    module.write_text("def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'v1']\n")
    master = arbiter(["deployed_app:app", "-w", "2", "--chdir", str(app_dir), "--log-level", "debug"])
    master.wait_ready(2)
    module.write_text(textwrap.dedent('''
        import logging, time

        def slow(record):
            if record.levelno >= logging.ERROR:
                time.sleep(1)
            return True

        for handler in logging.getLogger("arbiter.error").handlers:
            handler.addFilter(slow)
        raise ImportError("a broken deploy")
    '''))
    master.signal(signal.SIGHUP)
    master.wait_log(r"Reload failed: App failed to load\. Generation 2 abandoned")
    master.wait_log(r"ImportError: a broken deploy")
    assert master.log().count("ImportError: a broken deploy") == 1
    assert master.get("/") == (200, b"v1")
