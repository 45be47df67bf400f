"""`/metrics` in Prometheus' text format (version 0.0.4), built from one `status()` snapshot.

Memory and CPU come from /proc/<pid>/stat (`arbiter.procfs`): one small read per process, no
psutil, and a process that exits meanwhile is simply left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from arbiter import procfs
from arbiter.control.names import namespec
from arbiter.control.records import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROGRAM_STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN")
WORKER_STATES = ("BOOTING", "READY", "DRAINING", "RETIRING")
proc_usage = procfs.usage  # the one /proc reader; routes.py reads it through this module


def _escape(value: Any) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, Any], Any]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is not None:
                self.lines.append(f"{name}{_labels(labels)} {_number(value)}")


def render(status: Status) -> str:
    """The metrics text for one status snapshot."""
    master, workers, programs, reload = status.master, status.workers, status.programs, status.master.reload
    out = _Writer()
    out.family("arbiter_up", "gauge", "1 while the master loop answers.", [({}, 1)])
    out.family("arbiter_master_uptime_seconds", "gauge", "Seconds since the master started (monotonic clock).",
               [({}, master.uptime)])
    out.family("arbiter_workers_target", "gauge", "Web workers the master aims to run.",
               [({}, master.workers_target)])
    states: list[str] = [w.state for w in workers]
    known = list(WORKER_STATES) + sorted({s for s in states if s not in WORKER_STATES and s})
    out.family("arbiter_workers", "gauge", "Web workers by state.",
               [({"state": s}, states.count(s)) for s in known])
    out.family("arbiter_worker_requests_total", "counter", "Requests served by each worker.",
               [({"pid": w.pid}, w.requests) for w in workers])
    out.family("arbiter_worker_connections", "gauge", "Connections open in each worker.",
               [({"pid": w.pid}, w.connections) for w in workers])
    out.family("arbiter_worker_restarts_total", "counter", "Workers replaced after exiting.",
               [({}, master.worker_restarts)])
    out.family("arbiter_worker_timeouts_total", "counter", "Workers killed for a missed heartbeat.",
               [({}, master.worker_timeouts)])
    out.family("arbiter_reloads_total", "counter", "Rolling reloads started.", [({}, reload.count)])
    out.family("arbiter_reload_failures_total", "counter", "Rolling reloads that failed.", [({}, reload.failures)])
    out.family("arbiter_reload_last_success", "gauge", "0 when the last reload failed, else 1.",
               [({}, not reload.failed)])
    out.family("arbiter_program_state", "gauge", "1 for the state each program is in.",
               [({"name": namespec(p), "state": s}, int(p.state.name == s))
                for p in programs for s in PROGRAM_STATES])
    out.family("arbiter_program_restarts_total", "counter", "Times each program was started again.",
               [({"name": namespec(p)}, p.restarts) for p in programs])
    processes: list[tuple[dict[str, Any], int]] = []
    if master.pid:
        processes.append(({"role": "master", "name": "master", "pid": master.pid}, master.pid))
    processes += [({"role": "worker", "name": "worker", "pid": w.pid}, w.pid) for w in workers if w.pid]
    processes += [({"role": "program", "name": namespec(p), "pid": p.pid}, p.pid) for p in programs if p.pid]
    usage = [(labels, proc_usage(pid)) for labels, pid in processes]
    out.family("arbiter_process_resident_memory_bytes", "gauge", "Resident memory of each process.",
               [(labels, u[0]) for labels, u in usage if u])
    out.family("arbiter_process_cpu_seconds_total", "counter", "User and system CPU time of each process.",
               [(labels, u[1]) for labels, u in usage if u])
    return "\n".join(out.lines) + "\n"


def ready(status: Status) -> tuple[bool, str]:
    """Whether enough workers are READY and the master is RUNNING, and why not."""
    target = status.master.workers_target
    count = sum(1 for w in status.workers if w.state == "READY")
    if status.master.state != "RUNNING":
        return False, f"master is {status.master.state}"
    if count < target:
        return False, f"{count} of {target} workers ready"
    return True, f"{count} of {target} workers ready"
