"""Where the master's listening sockets come from: handed over by the image it replaced (an
in-place upgrade), handed down by systemd (socket activation), or bound from `--bind`."""

from __future__ import annotations

import dataclasses
import logging
import os

from arbiter.config.settings import Config
from arbiter.master.upgrade import HandOver
from arbiter.web import sockets
from arbiter.web.sockets import Listener


def acquire(cfg: Config, handover: HandOver | None, log: logging.Logger) -> tuple[Config, list[Listener]]:
    """The listeners, and `cfg` with `bind` naming them where they were inherited.

    Raises:
        BindError: an address cannot be bound.
    """
    if handover is not None:
        inherited = handover.listeners
        if all(text.startswith("fd://") for text in inherited):
            # Handed down from systemd: the sockets are the configuration.
            cfg = dataclasses.replace(cfg, bind=tuple(inherited))
        listeners = sockets.create_listeners(cfg.bind, cfg.backlog, inherited=inherited, reuse_port=cfg.reuse_port)
        kept = {listener.fileno() for listener in listeners}
        for fd in set(handover.listeners.values()) - kept:
            os.close(fd)  # an address the new config no longer binds
        return cfg, listeners
    activated = sockets.systemd_fds(os.environ)
    if activated:
        log.info("Using %d socket(s) from systemd socket activation", len(activated))
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # ours alone: children must not take them for theirs
        return dataclasses.replace(cfg, bind=tuple(f"fd://{fd}" for fd in activated)), sockets.adopt_systemd(activated)
    return cfg, sockets.create_listeners(cfg.bind, cfg.backlog, reuse_port=cfg.reuse_port)
