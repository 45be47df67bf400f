"""Where the control API listens, computed from a `Config` by one rule that the master's server
and `arbiter ctl` both use, so that the client always finds the socket the master made.

The unix socket is `control_socket` when set (`none`: no socket), else `arbiter.sock` beside the
pidfile, else `arbiter.sock` in the working directory. A relative path is relative to the
directory the command was started in (the master's before any `--chdir`, the client's own), as
Supervisor resolves `[unix_http_server] file`; a supervisord.conf's `%(here)s` is already
expanded by its reader.
"""

from __future__ import annotations

import os

from arbiter.config.settings import Config

SOCKET_NAME = "arbiter.sock"


def control_socket_path(cfg: Config, cwd: str) -> str | None:
    """The absolute path of the control socket `cfg` asks for, or None when it is turned off.

    Args:
        cfg: the resolved settings (the master's, or the client's built by the same loader).
        cwd: the directory relative paths are relative to.
    """
    configured = cfg.control_socket
    if configured is not None and configured.strip().lower() == "none":
        return None
    if configured:
        return os.path.normpath(os.path.join(cwd, os.path.expanduser(configured)))
    if cfg.pidfile:
        pidfile = os.path.join(cwd, os.path.expanduser(cfg.pidfile))
        return os.path.join(os.path.dirname(os.path.normpath(pidfile)), SOCKET_NAME)
    return os.path.join(cwd, SOCKET_NAME)


def control_tcp_address(cfg: Config) -> tuple[str, int] | None:
    """`control_bind` as (host, port), or None when TCP is off.

    Raises:
        ValueError: the value is not HOST:PORT (the message says what was expected).
    """
    if not cfg.control_bind:
        return None
    host, _, port = cfg.control_bind.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"control_bind {cfg.control_bind!r}: expected HOST:PORT (port 0-65535)")
    return host.strip("[]") or "127.0.0.1", int(port)
