"""Gunicorn's StatsD metrics, sent without ever blocking: `--statsd-host`, `--statsd-prefix`,
`--dogstatsd-tags`.

The names are Gunicorn's: each worker sends `gunicorn.requests` and
`gunicorn.request.status.<code>` (counters) and `gunicorn.request.duration` (a timer in ms) per
request, every process counts its `gunicorn.log.<level>` lines, and the master sends the
`gunicorn.workers` gauge. A tiny sender rather than a client library: StatsD is one datagram per
metric, Gunicorn's address forms (`unix://PATH`, `HOST:PORT`) and DogStatsD tags are not what the
common clients take, and what matters here is that a send never waits: the socket is
non-blocking and a datagram that cannot leave at once is dropped (metrics may be lossy; a worker
or the master may not stall).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from typing import Any

from arbiter.config.convert import statsd_address


class Statsd:
    """One process's sender. Made after fork (see `client`), so each process has its own socket."""

    def __init__(self, host: str, prefix: str = "", tags: str = "") -> None:
        family, address = statsd_address(host)
        if family != socket.AF_UNIX:
            # Resolved once, here: a name lookup per metric could block.
            info = socket.getaddrinfo(address[0], address[1], family, socket.SOCK_DGRAM)
            family, address = info[0][0], info[0][4]
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.address = address
        self.prefix = prefix.rstrip(".") + "." if prefix.strip(".") else ""
        self.suffix = f"|#{tags}".encode("ascii") if tags else b""

    def _send(self, line: str) -> None:
        try:
            self.sock.sendto(line.encode("ascii") + self.suffix, self.address)
        except OSError:
            pass  # full buffer, no listener (ECONNREFUSED), no route: metrics are best effort

    def increment(self, name: str, value: int = 1) -> None:
        self._send(f"{self.prefix}{name}:{value}|c|@1.0")

    def gauge(self, name: str, value: float) -> None:
        self._send(f"{self.prefix}{name}:{value}|g")

    def timer(self, name: str, milliseconds: float) -> None:
        self._send(f"{self.prefix}{name}:{milliseconds}|ms")

    def request(self, status: int, seconds: float) -> None:
        """One served request, as Gunicorn's access hook counts it."""
        self.timer("gunicorn.request.duration", round(seconds * 1000, 3))
        self.increment("gunicorn.requests")
        self.increment(f"gunicorn.request.status.{status}")

    def close(self) -> None:
        self.sock.close()


_clients: dict[int, Statsd] = {}


def client(cfg: Any) -> Statsd | None:
    """This process's sender for `cfg`, or None when `--statsd-host` is not set."""
    if not getattr(cfg, "statsd_host", None):
        return None
    pid = os.getpid()
    found = _clients.get(pid)
    if found is None:
        _clients.clear()  # a forked child drops (never uses) its parent's sender
        found = _clients[pid] = Statsd(cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags)
    return found


class LogCounter(logging.Handler):
    """Counts warning and worse log lines as Gunicorn's `gunicorn.log.<level>` metrics."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(logging.WARNING)
        self.cfg = cfg

    def emit(self, record: logging.LogRecord) -> None:
        sender = client(self.cfg)
        if sender is None:
            return
        if record.exc_info and record.levelno == logging.ERROR:
            sender.increment("gunicorn.log.exception")
        else:
            sender.increment(f"gunicorn.log.{record.levelname.lower()}")


def backlog(sock: socket.socket) -> int:
    """Connections waiting in a TCP listening socket's accept queue (Linux: TCP_INFO's
    tcpi_unacked, which a listening socket uses for its queue length); 0 where unknown."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    # struct tcp_info: 8 one-byte fields, then 32-bit ones; tcpi_unacked is the fifth of those.
    return int(struct.unpack_from("=I", info, 8 + 4 * 4)[0]) if len(info) >= 28 else 0


class WorkerGauge:
    """A master service: the `gunicorn.workers` gauge (every live worker), sent when the count
    changes, as Gunicorn's master does, and every 10 s so a restarted StatsD server has it too;
    with `--enable-backlog-metric`, the `gunicorn.backlog` gauge every second."""

    INTERVAL = 1.0
    REFRESH = 10.0

    def __init__(self, master: Any) -> None:
        self.master = master
        self._next = 0.0
        self._sent: tuple[int, float] | None = None  # (count, when)

    def start(self) -> None:
        self._next = time.monotonic()

    def next_deadline(self) -> float | None:
        return self._next

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.INTERVAL
        sender = client(self.master.cfg)
        pool = getattr(self.master, "pool", None)
        if sender is None or pool is None:
            return
        count = len(pool.workers)
        if self._sent is None or self._sent[0] != count or now - self._sent[1] >= self.REFRESH:
            sender.gauge("gunicorn.workers", count)
            self._sent = (count, now)
        if self.master.cfg.enable_backlog_metric:
            sender.gauge("gunicorn.backlog", sum(backlog(listener.sock) for listener in self.master.listeners))

    def close(self) -> None:
        pass

    def close_in_child(self) -> None:
        pass
