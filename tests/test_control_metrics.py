"""/metrics in Prometheus' text format, /healthz and /readyz."""

from __future__ import annotations

import os
import re

import pytest

from arbiter.control.metrics import proc_usage
from control_helpers import ServerLoop, call, make_loop, served  # noqa: F401  (fixtures)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the exposition format: every line is a comment or a valid sample, and
    every sample belongs to a family declared with # TYPE before it."""
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in types
            types[name] = kind
            families[name] = []
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, _, labels, value = match.groups()
        assert name in types, f"{name} has no # TYPE"
        parsed = {k: v for k, v, _ in LABEL.findall(labels or "")}
        families[name].append((parsed, float(value)))
    return families


def test_metrics_parse_and_carry_the_status(served: ServerLoop) -> None:
    status, headers, data = call(served.unix_path, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = parse(data.decode())
    assert metrics["arbiter_up"] == [({}, 1.0)]
    assert ({"state": "READY"}, 2.0) in metrics["arbiter_workers"]
    assert ({"state": "BOOTING"}, 0.0) in metrics["arbiter_workers"]
    assert ({"pid": "4100001"}, 7.0) in metrics["arbiter_worker_requests_total"]
    assert metrics["arbiter_worker_restarts_total"] == [({"reason": "exit"}, 3.0)]  # a master that gives no reasons
    assert metrics["arbiter_worker_timeouts_total"] == [({}, 1.0)]
    assert metrics["arbiter_reloads_total"] == [({}, 0.0)]
    assert metrics["arbiter_reload_last_success"] == [({}, 1.0)]
    states = {(labels["name"], labels["state"]): value for labels, value in metrics["arbiter_program_state"]}
    assert states[("pool:pool_0", "RUNNING")] == 1.0 and states[("pool:pool_0", "STOPPED")] == 0.0
    assert states[("idle", "STOPPED")] == 1.0
    assert ({"name": "ticker"}, 0.0) in metrics["arbiter_program_restarts_total"]
    rss = {(labels["role"], labels["name"]): value for labels, value in metrics["arbiter_process_resident_memory_bytes"]}
    # the fake master and program "ticker" are this very process, so /proc has them
    assert rss[("master", "master")] > 1 << 20 and rss[("program", "ticker")] > 1 << 20
    assert ("program", "pool:pool_0") not in rss  # a pid that does not exist is left out
    cpu = {labels["role"]: value for labels, value in metrics["arbiter_process_cpu_seconds_total"]}
    assert cpu["master"] > 0


def test_metrics_follow_changes_and_escape_labels(served: ServerLoop) -> None:
    backend = served.backend
    backend.reload_fails = True
    call(served.unix_path, "POST", "/v1/reload", {"wait": True})
    backend.programs[3]["name"] = backend.programs[3]["group"] = 'we"ird\\name\n'
    metrics = parse(call(served.unix_path, "GET", "/metrics")[2].decode())
    assert metrics["arbiter_reloads_total"] == [({}, 1.0)]
    assert metrics["arbiter_reload_failures_total"] == [({}, 1.0)]
    assert metrics["arbiter_reload_last_success"] == [({}, 0.0)]
    assert any(labels["name"] == r'we\"ird\\name\n' for labels, _ in metrics["arbiter_program_state"])


def test_proc_usage_reads_this_process() -> None:
    rss, cpu = proc_usage(os.getpid())  # type: ignore[misc]
    assert rss > 1 << 20 and cpu > 0
    assert proc_usage(2**22 + 12345) is None


def test_healthz_and_readyz(served: ServerLoop) -> None:
    backend = served.backend
    assert call(served.unix_path, "GET", "/healthz")[::2] == (200, b"ok\n")
    status, _, body = call(served.unix_path, "GET", "/readyz")
    assert status == 200 and body == b"ready: 2 of 2 workers ready\n"
    backend.workers[1]["state"] = "BOOTING"
    status, _, body = call(served.unix_path, "GET", "/readyz")
    assert status == 503 and body == b"not ready: 1 of 2 workers ready\n"
    backend.workers[1]["state"] = "READY"
    backend.master["state"] = "STOPPING"
    status, _, body = call(served.unix_path, "GET", "/readyz")
    assert status == 503 and b"STOPPING" in body
    assert call(served.unix_path, "GET", "/healthz")[0] == 200


def test_uptime_from_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wall-clock step (an hour either way) changes the start's date, never the uptime."""
    import time as time_module
    from types import SimpleNamespace

    from arbiter.control.master_backend import MasterBackend, Started

    clock = [1000.0]
    monkeypatch.setattr(time_module, "time", lambda: 1.7e9)
    backend = MasterBackend(SimpleNamespace(clock=lambda: clock[0]))
    assert backend.started == Started(wall=1.7e9, monotonic=1000.0)
    clock[0] += 6.25
    for step in (3600.0, -3600.0):
        monkeypatch.setattr(time_module, "time", lambda: 1.7e9 + 6.25 + step)
        assert backend.started.uptime(clock[0]) == 6.25
    assert Started(wall=0.0, monotonic=50.0).uptime(49.0) == 0.0  # never negative
