"""Gunicorn's features behind its flags, end to end: real masters, real sockets."""

from __future__ import annotations

import re

from conftest import http_get, run_arbiter, wait_until


def _pid_of_answer(port: int) -> int:
    status, body = http_get(port, "/")
    assert status == 200
    return int(re.search(rb"pid=(\d+)", body).group(1))


def test_reuse_port_lets_a_second_master_bind_the_same_port(arbiter):
    first = arbiter(["wsgi_app:application", "--reuse-port"])
    first.wait_ready(1)
    port = first.port
    second = arbiter(["wsgi_app:application", "--reuse-port", "-b", f"127.0.0.1:{port}"])
    second.wait_log(rf"Listening at: http://127\.0\.0\.1:{port}\b")
    second.wait_ready(1)
    workers = set(first.workers()) | set(second.workers())
    # The kernel spreads new connections over both masters' sockets: both answer.
    seen = wait_until(lambda: workers <= {_pid_of_answer(port) for _ in range(40)} or None, 20,
                      what="answers from both masters' workers")
    assert seen


def test_without_reuse_port_the_second_master_cannot_bind(arbiter):
    first = arbiter(["wsgi_app:application"])
    first.wait_ready(1)
    result = run_arbiter(["wsgi_app:application", "-b", f"127.0.0.1:{first.port}"])
    assert result.returncode != 0 and "address already in use" in result.stderr
