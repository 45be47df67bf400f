"""The control plane: the master's HTTP/1.1 + JSON API, dashboard, metrics and Supervisor's
XML-RPC, served inside the master's selector loop (see docs/design.md, "Programs and the control plane").

- `backend`: what the server needs from the master (`Backend`, `Command`, `ControlError`).
- `server`: `ControlServer`, the one object the master creates.
- `connection`: one HTTP connection over h11; `security`: who may use it.
- `routes` (JSON API, probes, metrics), `xmlrpc` (Supervisor's API), `dashboard`: what it serves;
  `commands`, `names`, `logs`, `metrics`: their helpers.
- `client`, `tables`, `shell`: what `arbiter ctl` (arbiter/ctl/cli.py) uses on the other side.
"""

from arbiter.control.backend import Backend, Command, ControlError
from arbiter.control.server import ControlServer

__all__ = ["Backend", "Command", "ControlError", "ControlServer"]
