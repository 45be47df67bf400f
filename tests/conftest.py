"""Shared test harness: start real `arbiter` processes and talk real HTTP to them.

Every master runs in its own session (process group); teardown SIGKILLs that group and reaps
it, so nothing a test started outlives it, even when the test fails. Nothing else is signalled.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Hypothesis writes a patch for each failing example it finds; keep those out of the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "arbiter-hypothesis"))
APPS = Path(__file__).resolve().parent / "apps"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def replace_file(path: Path, text: str) -> None:
    """Give `path` new content in one step (a rename, as most editors save). A plain write
    truncates first: a watcher that catches the empty file and the full one in two batches
    reloads twice, and a test waiting for one reload reads the wrong generation."""
    staged = path.with_name(path.name + ".next")
    staged.write_text(text)
    os.replace(staged, path)


def http_get(port: int, path: str = "/", timeout: float = 5.0, method: str = "GET",
             headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Arbiter:
    """One `arbiter` master under test, with its log captured to a file."""

    def __init__(self, args: list[str], tmp_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None, shell_prefix: str = "") -> None:
        self.args = args
        self.log_path = tmp_path / f"arbiter-{len(list(tmp_path.glob('arbiter-*.log')))}.log"
        full_env = dict(os.environ)
        full_env.pop("WEB_CONCURRENCY", None)
        full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT), full_env.get("PYTHONPATH", "")])
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        command = [sys.executable, "-m", "arbiter", *args]
        if shell_prefix:  # e.g. "umask 022": run by a shell that then becomes the master (exec)
            command = ["/bin/sh", "-c", f'{shell_prefix}; exec "$0" "$@"', *command]
        self.proc = subprocess.Popen(
            command,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=full_env, cwd=str(cwd or ROOT), start_new_session=True,
        )
        self.pid = self.proc.pid
        self._port: int | None = None

    # -- reading the log --------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[re.Match[str]]:
        def found() -> list[re.Match[str]] | None:
            matches = list(re.finditer(pattern, self.log()))
            if len(matches) >= count:
                return matches
            if self.proc.poll() is not None:
                raise AssertionError(f"arbiter exited ({self.proc.returncode}) before {pattern!r}:\n{self.log()}")
            return None

        return wait_until(found, timeout, what=f"log {pattern!r} x{count}")

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = int(self.wait_log(r"Listening at: https?://127\.0\.0\.1:(\d+)")[0].group(1))
        return self._port

    # -- processes -----------------------------------------------------------------------------

    def workers(self) -> list[int]:
        """Live web workers: children titled `arbiter: worker` (programs are children too)."""
        pids = []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                # One read of the command line: a child exiting between two reads gives [].
                title = child.cmdline()[:1]
                if child.status() != psutil.STATUS_ZOMBIE and title and title[0].startswith("arbiter: worker"):
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return sorted(pids)

    def wait_workers(self, condition: Callable[[list[int]], bool], timeout: float = 20.0,
                     what: str = "workers") -> list[int]:
        """Wait until the list of live worker pids satisfies `condition`; return it."""
        def check() -> list[int] | None:
            pids = self.workers()
            return pids if condition(pids) else None

        return wait_until(check, timeout, what=what)

    def wait_ready(self, workers: int, timeout: float = 20.0) -> list[int]:
        """Wait until `workers` workers run and every one has answered... at least the port does."""
        wait_until(lambda: len(self.workers()) == workers, timeout, what=f"{workers} workers")
        wait_until(lambda: self._answers(), timeout, what="an HTTP answer")
        return self.workers()

    def _answers(self) -> bool:
        try:
            return http_get(self.port, "/", timeout=2)[0] < 500
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"arbiter did not exit within {timeout}s:\n{self.log()}") from None

    def get(self, path: str = "/", **kwargs: Any) -> tuple[int, bytes]:
        return http_get(self.port, path, **kwargs)

    def cleanup(self) -> None:
        """Kill the master and everything below it. Programs run in sessions of their own (as
        Supervisor's do), so killing the master's group alone would orphan them: freeze the
        master first so it spawns nothing more, note its whole tree, then kill it all."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGSTOP)
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()  # a psutil handle refuses a pid that was reused meanwhile
        wait_dead(descendants, timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def wait_dead(processes: list[psutil.Process], timeout: float) -> None:
    """Wait (at most `timeout`) until each process is dead, as a zombie counts: a killed master's
    orphans go to init, which reaps when it likes (a container's init can take seconds, and
    psutil.wait_procs waits for that). A zombie holds no port or file; nor is it ours to reap."""
    def dead(process: psutil.Process) -> bool:
        try:
            return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + timeout
    while not all(dead(process) for process in processes) and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def arbiter(tmp_path: Path) -> Iterator[Callable[..., Arbiter]]:
    """`arbiter(["app:x", "-w", "2"])` starts a master bound to a kernel-chosen port."""
    started: list[Arbiter] = []

    def start(args: list[str], bind: bool = True, **kwargs: Any) -> Arbiter:
        if bind and not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args):
            args = [*args, "-b", "127.0.0.1:0"]
        if "--control-socket" not in args and kwargs.pop("control", True):
            # Each master its own control socket (the default, ./arbiter.sock, is shared).
            args = [*args, "--control-socket", str(tmp_path / f"control-{len(started)}.sock")]
        master = Arbiter(args, tmp_path, **kwargs)
        started.append(master)
        return master

    yield start
    for master in started:
        master.cleanup()


def run_arbiter(args: list[str], timeout: float = 30.0, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `arbiter` to completion (for commands that exit by themselves: errors, checks)."""
    full_env = dict(os.environ)
    full_env.pop("WEB_CONCURRENCY", None)
    full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT)])
    full_env.update(env or {})
    if args and args[0] != "ctl" and "--control-socket" not in args:
        args = [*args, "--control-socket", "none"]  # these runs end by themselves; nothing to control
    proc = subprocess.Popen([sys.executable, "-m", "arbiter", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, cwd=str(cwd or ROOT),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
