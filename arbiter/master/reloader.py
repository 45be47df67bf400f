"""`--reload` for development: a watcher process that prints one line per batch of changes.

watchfiles runs a thread of its own, and the master must never hold a thread (a fork would
copy it half-way), so the watching happens in this separate process; the master reads its
output in its selector and starts a rolling reload for each line.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from arbiter.errors import ArbiterError

if TYPE_CHECKING:
    from arbiter.config.settings import Config


class WatchHost(Protocol):
    """What the watcher uses of the master."""

    @property
    def cfg(self) -> Config: ...
    @property
    def pid(self) -> int: ...
    @property
    def selector(self) -> selectors.BaseSelector: ...
    @property
    def log(self) -> logging.Logger: ...
    def adopt_child(self, pid: int, on_exit: Callable[[int], None]) -> None: ...
    def reload(self) -> str | None: ...


class Watcher:
    """The master's side: starts the watcher process and reloads on each line it prints."""

    def __init__(self, master: WatchHost) -> None:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise ArbiterError("--reload needs watchfiles: pip install 'arbiter[reload]'") from None
        self.master = master
        paths = sorted({os.getcwd(), *master.cfg.pythonpath})
        # --reload-extra-file: any kind of file, watched through its directory.
        extra = sorted({os.path.abspath(path) for path in master.cfg.reload_extra_files})
        spec = json.dumps({"paths": paths, "extra": extra, "engine": master.cfg.reload_engine})
        self.proc = subprocess.Popen([sys.executable, "-m", "arbiter.master.reloader", str(master.pid), spec],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        master.selector.register(self.proc.stdout, selectors.EVENT_READ, self._on_output)
        master.adopt_child(self.proc.pid, self._exited)
        self.paths = paths + extra

    def _exited(self, status: int) -> None:
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by the master's loop

    def _on_output(self, key: selectors.SelectorKey, mask: int) -> None:
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        if not data:
            self.master.selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
            return
        changed = False
        for line in data.decode(errors="replace").splitlines():
            if line == "ready":
                self.master.log.info("Watching %s for changes (--reload)", ", ".join(self.paths))
            else:
                changed = True
                self.master.log.info("%s; reloading", line.strip())
        if changed:
            self.master.reload()

    def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.wait()


def main(master_pid: int, spec: dict[str, Any]) -> None:
    import os
    import signal

    from watchfiles import Change, PythonFilter, watch

    from arbiter.web.workers.base import set_parent_death_signal

    set_parent_death_signal(signal.SIGTERM)  # never outlive the master
    if os.getppid() != master_pid:  # it died before that took effect
        return

    paths: list[str] = spec["paths"]
    extra = set(spec["extra"])
    python = PythonFilter()

    def wanted(change: Change, path: str) -> bool:
        return path in extra or python(change, path)

    ready = False
    # yield_on_timeout: the first (empty) yield means the watches are in place; saying so lets
    # the master (and tests) know that a change made from now on will be seen.
    dirs = sorted({*paths, *(os.path.dirname(path) for path in extra)})
    # --reload-engine: poll where inotify sees nothing (network and some container file systems).
    for changes in watch(*dirs, watch_filter=wanted, raise_interrupt=False, yield_on_timeout=True,
                         rust_timeout=1000, force_polling=spec["engine"] == "poll", poll_delay_ms=100):
        if not changes:
            if not ready:
                ready = True
                print("ready", flush=True)
            continue
        names = sorted({path for _, path in changes})
        print("changed " + " ".join(names), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]))
