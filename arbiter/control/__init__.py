"""The control plane: the master's HTTP/1.1 + JSON API, dashboard, metrics and Supervisor's
XML-RPC, served inside the master's selector loop (see docs/design.md and docs/api.md).

- `backend`: what the server needs from the master (`Backend`, `Command`, `ControlError`);
  `records`: the typed status rows and command arguments they exchange.
- `server`: `ControlServer`, the one object the master creates; `location`: where it listens
  (the one rule `arbiter ctl` shares); `master_backend`: the `Backend` of a real master.
- `connection`: one HTTP connection over h11; `security`: who may use it (uid, token, Basic).
- `routes` (JSON API, probes, metrics), `xmlrpc` (Supervisor's API), `dashboard` (and
  `static/dashboard.html`): what it serves; `commands`, `names`, `logs`, `metrics`: their helpers.
"""

from arbiter.control.backend import Backend, Command, ControlError
from arbiter.control.server import ControlServer

__all__ = ["Backend", "Command", "ControlError", "ControlServer"]
