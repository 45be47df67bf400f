"""Zero-downtime operations under load: rolling reload, scaling, recycling, a broken deploy."""

from __future__ import annotations

import concurrent.futures
import signal
import textwrap

import pytest

from load import Load

WORKER_CLASSES = ["uvicorn", "sync", "gthread"]
APP_FOR = {"uvicorn": "asgi_app:app", "sync": "wsgi_app:app", "gthread": "wsgi_app:app"}


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


@pytest.mark.parametrize("kind", ["uvicorn", "sync"])
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
        load.wait_for_requests(100)
        result = load.stop()
    assert result.failures == [], result.failures[:10]
    assert not original <= set(master.workers())
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
