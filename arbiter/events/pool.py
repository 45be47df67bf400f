"""Event buffers: one per listener pool, fed by one bus that numbers every event.

The bus gives each published event its global serial and hands it to every pool subscribed to
its type; a pool numbers it again (`poolserial`), keeps it in a bounded buffer and gives the
oldest to the next READY listener. A rejected event, or one whose listener died or broke the
protocol while handling it, goes back to the head of its pool's buffer. A full buffer drops its
oldest event and says so. Nothing here blocks or writes: the caller writes the envelopes.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

from arbiter.events.types import Event, envelope, subscribed


@dataclass
class EventPool:
    """The buffer and bookkeeping of one `[eventlistener:x]` pool."""

    name: str
    subscriptions: frozenset[str]
    buffer_size: int = 10
    server: str = "supervisor"
    serial: int = -1
    buffer: collections.deque[Event] = field(default_factory=collections.deque)
    in_flight: dict[str, Event] = field(default_factory=dict)  # listener name -> its event

    def wants(self, event: Event) -> bool:
        return subscribed(self.subscriptions, event.name)

    def accept(self, event: Event, head: bool = False) -> str | None:
        """Buffer an event; returns the log line when the buffer overflowed."""
        if self.name not in event.pool_serials:
            self.serial += 1
            event.pool_serials[self.name] = self.serial
        message = None
        if len(self.buffer) >= self.buffer_size and self.buffer:
            dropped = self.buffer.popleft()
            message = f"pool {self.name} event buffer overflowed, discarding event {dropped.serial}"
        if head:
            self.buffer.appendleft(event)
        else:
            self.buffer.append(event)
        return message

    def dispatch(self, ready: Iterable[str]) -> list[tuple[str, bytes]]:
        """Pair the oldest events with READY listeners (in the order given); the caller writes
        each envelope to that listener's stdin and tells its protocol `sent()`."""
        out = []
        for listener in ready:
            if not self.buffer:
                break
            event = self.buffer.popleft()
            self.in_flight[listener] = event
            out.append((listener, envelope(event, self.name, self.server)))
        return out

    def done(self, listener: str) -> None:
        self.in_flight.pop(listener, None)

    def send_again(self, listener: str) -> str | None:
        """The listener rejected its event, broke the protocol or died: the event goes back to
        the head of the buffer. Returns an overflow line if that pushed one out."""
        event = self.in_flight.pop(listener, None)
        return None if event is None else self.accept(event, head=True)


@dataclass
class EventBus:
    """Numbers every event once and hands it to the pools that subscribe to its type."""

    pools: dict[str, EventPool] = field(default_factory=dict)
    serial: int = -1

    def publish(self, event: Event) -> list[str]:
        """Buffer `event` in each interested pool; returns overflow log lines."""
        interested = [pool for pool in self.pools.values() if pool.wants(event)]
        if not interested:
            return []
        self.serial += 1
        event.serial = self.serial
        lines = [pool.accept(event) for pool in interested]
        return [line for line in lines if line]
