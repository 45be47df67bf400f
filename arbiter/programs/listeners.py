"""Feeding event listeners from the master loop: `EventHub`.

The hub owns the bus (`events.pool.EventBus`) and one `EventPool` per `[eventlistener:x]`, and,
per listener process, its protocol state (`events.listener.ListenerProtocol`) and what is left
to write to its stdin. Events are published into the pools' buffers; each READY listener that
is RUNNING (as in Supervisor) is given the oldest event of its pool.

Writing never blocks: a listener's stdin is non-blocking, and what does not fit in its pipe is
kept and written when the selector says it is writable. A listener that stops reading holds one
event in its pipe and is BUSY, so it gets no more; its pool's buffer fills and drops its oldest
events (logged), and nothing else waits: other pools, other listeners of the same pool and the
master go on.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from arbiter.events.listener import ListenerProtocol, ListenerState, Verdict, default_handler
from arbiter.events.pool import EventBus, EventPool
from arbiter.events.types import Event, process_state
from arbiter.programs.config import ProgramConfig
from arbiter.programs.listener_config import Handler, ListenerConfig, resolve_handler
from arbiter.programs.state_events import Change
from arbiter.programs.states import ProcessStates


def _event(event: Event) -> dict[str, Any]:
    return {"name": event.name, "payload": event.payload, "serial": event.serial,
            "pool_serials": event.pool_serials, "context": event.context}


def _from(data: dict[str, Any]) -> Event:
    return Event(data["name"], data["payload"], int(data["serial"]), dict(data["pool_serials"]),
                 dict(data["context"]))


@dataclass
class _Listener:
    """One listener process as the hub sees it."""

    pool: str
    protocol: ListenerProtocol = field(default_factory=ListenerProtocol)
    fd: int = -1  # its stdin, our write end; -1 while it has no child
    pending: bytes = b""  # the part of an envelope its pipe has not taken yet
    running: bool = False  # its process is RUNNING: only then is it sent events


class EventHub:
    """Every pool, every listener, and the bus that feeds them.

    Args:
        selector: the master's; a stdin with bytes left to write is watched for writability.
        log: Supervisor's lines (`pool x event buffer overflowed, discarding event 12`, ...).
        server: the `server:` field of every envelope (Supervisor's identifier).
    """

    def __init__(self, selector: selectors.BaseSelector, log: logging.Logger,
                 server: str = "supervisor") -> None:
        self.bus = EventBus()
        self._selector = selector
        self._log = log
        self._server = server
        self._handlers: dict[str, Handler | None] = {}
        self._listeners: dict[str, _Listener] = {}  # process full name -> listener

    # ---- configuration ----------------------------------------------------------------

    def set_pool(self, name: str, config: ListenerConfig) -> None:
        """Make (or reconfigure) pool `name`; its buffered events are kept.

        Raises:
            ValueError: the result handler cannot be imported.
        """
        self._handlers[name] = resolve_handler(config.result_handler)
        pool = self.bus.pools.get(name)
        if pool is None:
            self.bus.pools[name] = EventPool(name, config.events, config.buffer_size, self._server)
        else:
            pool.subscriptions, pool.buffer_size = config.events, config.buffer_size

    def remove_pool(self, name: str) -> None:
        self.bus.pools.pop(name, None)
        self._handlers.pop(name, None)

    def sync_pools(self, programs: Iterable[ProgramConfig]) -> None:
        """One pool per listener program of `programs` (every process's newest configuration).

        Raises:
            ValueError: a result handler cannot be imported (naming the pool).
        """
        wanted = {program.name: program.listener for program in programs if program.listener is not None}
        for name in set(self.bus.pools) - set(wanted):
            self.remove_pool(name)
        for name, config in wanted.items():
            try:
                self.set_pool(name, config)
            except ValueError as exc:
                raise ValueError(f"event listener {name}: result_handler: expected {exc}") from None

    def state_changed(self, name: str, group: str, entered: list[Change], listener: str | None) -> None:
        """PROCESS_STATE_* for each state process `name` entered; `listener`: its full name
        when it is a listener, which is sent events only while RUNNING."""
        for change in entered:
            self.publish(process_state(change.state.name, name, group, change.from_state.name,
                                       tries=change.tries, expected=change.expected, pid=change.pid))
        if listener is not None and entered:
            self.running(listener, entered[-1].state is ProcessStates.RUNNING)

    # ---- events -----------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Buffer `event` for every pool subscribed to it and send what can be sent now."""
        for line in self.bus.publish(event):
            self._log.error("%s", line)
        self.dispatch()

    def dispatch(self) -> None:
        """Give each pool's oldest events to its READY, RUNNING listeners."""
        for name, pool in self.bus.pools.items():
            if not pool.buffer:
                continue
            ready = [full for full, lst in self._listeners.items()
                     if lst.pool == name and lst.running and lst.fd >= 0 and not lst.pending
                     and lst.protocol.state is ListenerState.READY]
            for full, envelope in pool.dispatch(ready):
                listener = self._listeners[full]
                listener.protocol.sent()
                self._log.debug("event sent to listener %s", full)
                self._write(full, listener, envelope)

    # ---- listener processes (the manager calls these) ---------------------------------

    def spawned(self, full: str, pool: str, stdin_fd: int) -> None:
        """A new child of listener `full` (of `pool`) writes to us and reads `stdin_fd`."""
        listener = self._listeners.setdefault(full, _Listener(pool))
        listener.pool, listener.fd, listener.pending = pool, stdin_fd, b""
        listener.protocol.restart()

    def running(self, full: str, running: bool) -> None:
        listener = self._listeners.get(full)
        if listener is not None:
            listener.running = running
            if running:
                self.dispatch()

    def exited(self, full: str) -> None:
        """Its child is gone: an event it held goes back to the head of its pool's buffer."""
        listener = self._listeners.get(full)
        if listener is None:
            return
        self._unwatch(listener)
        listener.fd, listener.pending, listener.running = -1, b"", False
        listener.protocol.restart()
        self._send_again(full, listener)

    def forget(self, full: str) -> None:
        listener = self._listeners.pop(full, None)
        if listener is not None:
            self._unwatch(listener)

    def output(self, full: str, data: bytes | memoryview) -> None:
        """What listener `full` wrote on its stdout (the protocol)."""
        listener = self._listeners.get(full)
        if listener is None:
            return
        pool = self.bus.pools.get(listener.pool)
        event = pool.in_flight.get(full) if pool is not None else None
        judge = self._judge(listener.pool, event)
        for outcome in listener.protocol.feed(bytes(data), judge):
            if outcome.kind == "done":
                if pool is not None:
                    pool.done(full)
                self._log.debug("%s: event was processed", full)
            elif outcome.kind == "rejected":
                self._log.warning("%s: event was rejected", full)
                self._send_again(full, listener)
            elif outcome.kind == "violation":
                self._log.warning("%s: has entered the UNKNOWN state and will no longer receive "
                                  "events, this usually indicates the process violated the "
                                  "eventlistener protocol (%s)", full, outcome.detail)
                self._send_again(full, listener)
        self.dispatch()

    def pending(self, pools: set[str]) -> bool:
        """Whether any of `pools` holds an event not yet handled (buffered, or in flight to a
        listener that can still answer)."""
        for name in pools:
            pool = self.bus.pools.get(name)
            if pool is None:
                continue
            live = [full for full, lst in self._listeners.items() if lst.pool == name and lst.fd >= 0
                    and lst.protocol.state is not ListenerState.UNKNOWN]
            if live and (pool.buffer or any(full in pool.in_flight for full in live)):
                return True
        return False

    # ---- an in-place upgrade ----------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Everything the next image needs to go on feeding the same listeners: the serials,
        each pool's buffer and events in flight, each listener's protocol state and what is
        left to write to it (JSON-able; see `restore`)."""
        return {
            "serial": self.bus.serial,
            "pools": {name: {"serial": pool.serial, "buffer": [_event(e) for e in pool.buffer],
                             "in_flight": {k: _event(e) for k, e in pool.in_flight.items()}}
                      for name, pool in self.bus.pools.items()},
            "listeners": {full: {"pool": lst.pool, "protocol": lst.protocol.export(),
                                 "pending": lst.pending.decode("latin-1")}
                          for full, lst in self._listeners.items() if lst.fd >= 0},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Take up what `export` saved (after the pools are set and the listeners adopted)."""
        self.bus.serial = int(saved.get("serial", -1))
        for name, data in saved.get("pools", {}).items():
            pool = self.bus.pools.get(name)
            if pool is None:
                continue  # a pool the new configuration no longer has
            pool.serial = int(data["serial"])
            pool.buffer.extend(_from(e) for e in data["buffer"])
            pool.in_flight.update({k: _from(e) for k, e in data["in_flight"].items()})
        for full, data in saved.get("listeners", {}).items():
            listener = self._listeners.get(full)
            if listener is None or listener.fd < 0:
                continue
            listener.protocol.restore(data["protocol"])
            if data["pending"]:
                self._write(full, listener, data["pending"].encode("latin-1"))
        self.dispatch()

    def states(self) -> dict[str, str]:
        """Listener full name -> its protocol state (for status and tests)."""
        return {full: lst.protocol.state.value for full, lst in self._listeners.items()}

    # ---- plumbing -----------------------------------------------------------------------

    def _judge(self, pool: str, event: Event | None) -> Callable[[bytes], Verdict]:
        handler = self._handlers.get(pool)
        if handler is None:
            return default_handler

        def judge(result: bytes) -> Verdict:
            # Supervisor's contract: return means processed, RejectEvent means send it again,
            # anything else is an error (the listener goes UNKNOWN).
            try:
                handler(event, result)
            except Exception as exc:  # noqa: BLE001 -- the handler is user code
                if type(exc).__name__ == "RejectEvent":
                    return Verdict.REJECTED
                self._log.warning("pool %s: the result handler failed: %r", pool, exc)
                return Verdict.ERROR
            return Verdict.OK
        return judge

    def _send_again(self, full: str, listener: _Listener) -> None:
        pool = self.bus.pools.get(listener.pool)
        if pool is not None:
            line = pool.send_again(full)
            if line:
                self._log.error("%s", line)

    def _write(self, full: str, listener: _Listener, data: bytes) -> None:
        data = listener.pending + data
        try:
            written = os.write(listener.fd, data)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            # EPIPE: it exited and is about to be reaped, which sends the event again.
            if exc.errno != errno.EPIPE:
                self._log.error("cannot write an event to listener %s: %s", full, exc.strerror)
            listener.pending = b""
            self._unwatch(listener)
            return
        listener.pending = data[written:]
        if listener.pending:
            self._watch(full, listener)
        else:
            self._unwatch(listener)

    def _watch(self, full: str, listener: _Listener) -> None:
        def on_writable(key: Any, mask: int) -> None:
            self._write(full, listener, b"")
        try:
            self._selector.register(listener.fd, selectors.EVENT_WRITE, on_writable)
        except KeyError:
            pass  # already watched

    def _unwatch(self, listener: _Listener) -> None:
        if listener.fd < 0:
            return
        try:
            self._selector.unregister(listener.fd)
        except (KeyError, ValueError):
            pass
