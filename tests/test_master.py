"""The master's life cycle, end to end: real masters, real workers, real signals."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import time

import psutil
import pytest

from conftest import http_get, run_arbiter, wait_until


def test_asgi_app_served_by_several_workers_under_concurrent_load(arbiter):
    master = arbiter(["asgi_app:app", "-w", "3"])
    pids = master.wait_ready(3)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: master.get("/"), range(300)))
    assert all(status == 200 for status, _ in results)
    served_by = {int(body.split()[0].split(b"=")[1]) for _, body in results}
    assert served_by <= set(pids)
    # `auto` with no --preload: one worker (of three) says what it chose, once it has the app.
    assert master.log().count("Using worker: uvicorn (for an ASGI app)") == 1
    assert "Using worker: auto" not in master.log()


def test_killed_worker_is_replaced(arbiter):
    master = arbiter(["asgi_app:app", "-w", "2"])
    before = master.wait_ready(2)
    os.kill(before[0], signal.SIGKILL)
    after = master.wait_workers(lambda w: len(w) == 2 and before[0] not in w, what="a replacement worker")
    assert before[1] in after
    assert master.get("/")[0] == 200
    assert "killed by SIGKILL" in master.log()


def test_hung_asgi_worker_is_aborted_and_replaced_while_others_serve(arbiter):
    master = arbiter(["asgi_app:app", "-w", "2", "-t", "2"])
    before = master.wait_ready(2)
    try:
        http_get(master.port, "/block", timeout=0.5)
    except OSError:
        pass  # the worker never answers: it is stuck
    # The other worker keeps serving while the stuck one is noticed.
    assert master.get("/")[0] == 200
    master.wait_log(r"WORKER TIMEOUT \(pid:\d+\)", timeout=15)
    after = master.wait_workers(lambda w: len(w) == 2 and set(w) != set(before), what="the hung worker replaced")
    assert len(set(after) & set(before)) == 1
    assert master.get("/")[0] == 200


def test_sigterm_lets_an_in_flight_request_finish(arbiter):
    master = arbiter(["asgi_app:app", "-w", "1", "--graceful-timeout", "10"])
    [worker] = master.wait_ready(1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(master.get, "/sleep?s=1.5", timeout=10)
        wait_until(lambda: any(c.status == "ESTABLISHED" for c in psutil.Process(worker).net_connections()),
                   what="the slow request to reach the worker")
        master.signal(signal.SIGTERM)
        status, body = slow.result(timeout=10)
    assert status == 200 and b"path=/sleep" in body
    assert master.wait_exit(15) == 0


def test_sigint_stops_quickly(arbiter):
    master = arbiter(["asgi_app:app", "-w", "2", "--graceful-timeout", "30"])
    master.wait_ready(2)
    started = time.monotonic()
    master.signal(signal.SIGINT)
    assert master.wait_exit(10) == 0
    assert time.monotonic() - started < 5


def test_workers_leave_when_the_master_is_killed(arbiter):
    master = arbiter(["asgi_app:app", "-w", "2"])
    workers = master.wait_ready(2)
    port = master.port
    master.proc.send_signal(signal.SIGKILL)
    master.proc.wait(5)

    def gone() -> bool:
        return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for pid in workers)

    wait_until(gone, timeout=2.5, what="workers to exit after the master died")
    # Nobody holds the port any more.
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    finally:
        probe.close()


def test_import_error_exits_4_with_one_traceback_and_no_fork_loop(tmp_path):
    started = time.monotonic()
    result = run_arbiter(["broken_app:app", "-w", "3", "-b", "127.0.0.1:0"], timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert time.monotonic() - started < 15
    assert output.count("Traceback (most recent call last)") == 1, output
    assert output.count("RuntimeError: boom") == 1
    assert 1 <= output.count("importing broken_app") <= 3  # at most one import per worker: no retries
    assert output.count("Booting worker with pid") == 3
    assert "App failed to load" in output


def test_import_error_with_preload_exits_4_without_forking(tmp_path):
    result = run_arbiter(["broken_app:app", "-w", "3", "--preload", "-b", "127.0.0.1:0"])
    output = result.stdout + result.stderr
    assert result.returncode == 4, output
    assert output.count("Traceback (most recent call last)") == 1
    assert "Booting worker" not in output


def test_missing_module_is_one_clear_line(tmp_path):
    result = run_arbiter(["no_such_module_here:app", "-b", "127.0.0.1:0", "--preload"])
    assert result.returncode == 4
    assert "Error: cannot import module 'no_such_module_here': no such module" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_class_for_the_wrong_interface_exits_3(tmp_path):
    result = run_arbiter(["asgi_app:app", "-k", "sync", "-w", "2", "-b", "127.0.0.1:0"])
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "serves WSGI, but the app is an ASGI app; use -k uvicorn" in output


def test_port_in_use_is_one_clear_line_and_exit_1(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = run_arbiter(["asgi_app:app", "-b", f"127.0.0.1:{port}"])
    finally:
        holder.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"Error: cannot bind 127.0.0.1:{port}: address already in use"
    assert "Traceback" not in result.stderr


def test_master_is_single_threaded(arbiter):
    master = arbiter(["asgi_app:app", "-w", "2"])
    master.wait_ready(2)
    assert psutil.Process(master.pid).num_threads() == 1


def test_process_titles(arbiter):
    master = arbiter(["asgi_app:app", "-w", "1", "-n", "shop"])
    workers = master.wait_ready(1)
    assert psutil.Process(master.pid).cmdline()[0] == "arbiter: master [shop]"
    assert psutil.Process(workers[0]).cmdline()[0] == "arbiter: worker [shop]"


@pytest.mark.parametrize("spec", ["factory_app:create_app()", "wsgi_app", "wsgi_app:application"])
def test_app_spec_forms(arbiter, spec):
    master = arbiter([spec, "-w", "1", "-k", "gthread"])
    master.wait_ready(1)
    status, body = master.get("/")
    assert status == 200
    if "factory" in spec:
        assert body.startswith(b"factory calls=1 ")  # called once in the worker


def test_chdir_and_pythonpath(arbiter, tmp_path):
    app_dir = tmp_path / "elsewhere"
    app_dir.mkdir()
    (app_dir / "far_app.py").write_text(
        "import os\nasync def app(scope, receive, send):\n"
        "    if scope['type'] != 'http': return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': os.getcwd().encode()})\n")
    master = arbiter(["far_app:app", "--chdir", str(app_dir)])
    master.wait_ready(1)
    assert master.get("/") == (200, str(app_dir).encode())
    other = arbiter(["far_app:app", "--pythonpath", str(app_dir)])
    other.wait_ready(1)
    assert other.get("/")[0] == 200


def test_custom_worker_class(arbiter):
    master = arbiter(["asgi_app:app", "-w", "1", "-k", "custom_worker:TaggingWorker"])
    master.wait_ready(1)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=5)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("x-worker-class") == "tagging"
    conn.close()
    assert "TaggingWorker booting" in master.log()


def test_lifespan_runs_once_per_worker(arbiter, tmp_path):
    marker = tmp_path / "lifespan.txt"
    master = arbiter(["asgi_app:app", "-w", "2", "-k", "uvicorn"], env={"LIFESPAN_MARKER": str(marker)})
    workers = master.wait_ready(2)
    wait_until(lambda: marker.exists() and marker.read_text().count("startup") == 2)
    master.signal(signal.SIGTERM)
    assert master.wait_exit(15) == 0
    lines = marker.read_text().split("\n")
    assert sorted(f"startup {pid}" for pid in workers) == sorted(line for line in lines if line.startswith("startup"))
    assert sorted(f"shutdown {pid}" for pid in workers) == sorted(line for line in lines if line.startswith("shutdown"))


def test_gunicorn_python_config_with_hooks(arbiter, tmp_path):
    hook_log = tmp_path / "hooks.txt"
    master = arbiter(["-c", "tests/apps/hooks_conf.py", "asgi_app:app"], env={"HOOK_LOG": str(hook_log)})
    workers = master.wait_ready(2)
    master.signal(signal.SIGTTIN)
    # Every worker past its boot, so each one runs its exit hook when stopped.
    wait_until(lambda: hook_log.read_text().count("post_worker_init") == 3, what="3 workers initialised")
    master.signal(signal.SIGTERM)
    assert master.wait_exit(15) == 0
    text = hook_log.read_text()
    assert text.startswith("on_starting\nwhen_ready workers=2\n")
    for pid in workers:
        assert f"post_fork pid={pid}" in text
        assert f"post_worker_init pid={pid}" in text
        assert f"worker_exit pid={pid}" in text
        assert f"child_exit pid={pid}" in text
    assert "pre_fork age=3" in text
    assert "nworkers_changed 2->3" in text
    assert text.endswith("on_exit\n")


def test_ttin_and_ttou_change_the_count(arbiter):
    master = arbiter(["asgi_app:app", "-w", "2"])
    master.wait_ready(2)
    master.signal(signal.SIGTTIN)
    master.wait_workers(lambda w: len(w) == 3)
    # One at a time: the kernel merges a signal sent again before the first was handled.
    master.signal(signal.SIGTTOU)
    master.wait_workers(lambda w: len(w) == 2)
    master.signal(signal.SIGTTOU)
    master.wait_workers(lambda w: len(w) == 1)
    master.signal(signal.SIGTTOU)
    master.wait_log(r"Workers: staying at 1 \(the minimum\)")
    assert master.get("/")[0] == 200
    log = master.log()
    assert re.findall(r"Handling signal: (ttin|ttou)", log) == ["ttin", "ttou", "ttou", "ttou"]
    assert re.findall(r"Workers: (\d+ -> \d+)", log) == ["2 -> 3", "3 -> 2", "2 -> 1"]


def test_asgi_access_log_in_gunicorn_format(arbiter):
    master = arbiter(["asgi_app:app", "-w", "1", "--access-logfile", "-",
                      "--access-logformat", '%(h)s "%(r)s" %(s)s %(b)s "%({user-agent}i)s" %(p)s'])
    [worker] = master.wait_ready(1)
    assert master.get("/logged?x=1", headers={"User-Agent": "probe/1"})[0] == 200
    master.wait_log(rf'127\.0\.0\.1 "GET /logged\?x=1 HTTP/1\.1" 200 \d+ "probe/1" <{worker}>')


def test_flask_app_on_sync_workers_under_concurrent_load(arbiter):
    master = arbiter(["examples.flask_app:app", "-w", "3"])
    pids = master.wait_ready(3)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: master.get("/echo", method="POST", body=f"n={i}".encode()), range(300)))
    assert [status for status, _ in results] == [200] * 300
    assert sorted(body for _, body in results) == sorted(f"n={i}".encode() for i in range(300))
    assert master.log().count("Using worker: sync (for a WSGI app)") == 1
    assert set(master.workers()) == set(pids)  # nobody crashed


def test_hung_sync_handler_is_aborted_and_replaced(arbiter):
    master = arbiter(["wsgi_app:app", "-k", "sync", "-w", "2", "-t", "2"])
    before = master.wait_ready(2)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: _swallow(lambda: http_get(master.port, "/hang", timeout=10)))
        master.wait_log(r"WORKER TIMEOUT \(pid:\d+\)", timeout=15)
    after = master.wait_workers(lambda w: len(w) == 2 and set(w) != set(before), what="the hung worker replaced")
    assert len(set(after) & set(before)) == 1
    assert master.get("/")[0] == 200


def _swallow(call):
    try:
        call()
    except OSError:
        pass


def test_user_group_and_env_reach_the_workers(arbiter):
    import pwd
    import tempfile
    from pathlib import Path

    # pytest's own temp root is 0700; the worker, once `nobody`, must be able to read the app.
    with tempfile.TemporaryDirectory() as shared:
        _serve_as_nobody(arbiter, Path(shared), pwd.getpwnam("nobody"))


def _serve_as_nobody(arbiter, tmp_path, nobody):
    probe = tmp_path / "probe_app.py"
    probe.write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    body = f'{os.getuid()} {os.getgid()} {os.environ.get(\"GREETING\")}'.encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n")
    tmp_path.chmod(0o755)
    probe.chmod(0o644)
    master = arbiter(["probe_app:app", "--pythonpath", str(tmp_path), "-u", "nobody", "-e", "GREETING=hi"])
    master.wait_ready(1)
    assert master.get("/") == (200, f"{nobody.pw_uid} {nobody.pw_gid} hi".encode())
    master.cleanup()


def test_malformed_requests_get_4xx_while_other_connections_are_served(arbiter):
    master = arbiter(["wsgi_app:app", "-k", "sync", "-w", "1"])
    master.wait_ready(1)
    bad_requests = [  # (request, the status line's start)
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.1 4"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"HTTP/1.1 4"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad\x00Header: y\r\n\r\n", b"HTTP/1.1 4"),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 414"),
        # `NOT` is a token but no method llhttp knows: 501 Not Implemented (RFC 9110 section 9.1)
        (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 501"),
    ]
    good = socket.create_connection(("127.0.0.1", master.port), timeout=5)
    try:
        for raw, expected in bad_requests:
            bad = socket.create_connection(("127.0.0.1", master.port), timeout=5)
            try:
                bad.sendall(raw)
                status_line = bad.recv(4096).split(b"\r\n", 1)[0]
                assert status_line.startswith(expected), (raw[:40], status_line)
                assert bad.recv(4096) == b""  # and the connection is closed
            finally:
                bad.close()
            good.sendall(b"GET /still-fine HTTP/1.1\r\nHost: x\r\n\r\n")
            assert good.recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        good.close()
