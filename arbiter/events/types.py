"""Event types, their hierarchy and their payloads, as Supervisor names and formats them.

A listener subscribes to names; a subscription to a parent type (`PROCESS_STATE`, `EVENT`) gets
every type below it. Arbiter's own web-worker events sit under a parent of their own,
`ARBITER`, which is not below `EVENT`: a Supervisor-era listener that subscribes to `EVENT`
never meets a name it does not know; one that wants them names `ARBITER` or a child.

Payloads are text, as Supervisor's are: the envelope's `len` counts characters of the payload
(Supervisor measures the `str` before encoding it), which is what `childutils` reads back from
a text-mode stdin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# name -> parent; None for a root. Supervisor's tree first, then Arbiter's.
PARENTS: dict[str, str | None] = {
    "EVENT": None,
    "PROCESS_STATE": "EVENT",
    **{f"PROCESS_STATE_{state}": "PROCESS_STATE" for state in
       ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN")},
    "PROCESS_COMMUNICATION": "EVENT",
    "PROCESS_COMMUNICATION_STDOUT": "PROCESS_COMMUNICATION",
    "PROCESS_COMMUNICATION_STDERR": "PROCESS_COMMUNICATION",
    "PROCESS_LOG": "EVENT",
    "PROCESS_LOG_STDOUT": "PROCESS_LOG",
    "PROCESS_LOG_STDERR": "PROCESS_LOG",
    "REMOTE_COMMUNICATION": "EVENT",
    "SUPERVISOR_STATE_CHANGE": "EVENT",
    "SUPERVISOR_STATE_CHANGE_RUNNING": "SUPERVISOR_STATE_CHANGE",
    "SUPERVISOR_STATE_CHANGE_STOPPING": "SUPERVISOR_STATE_CHANGE",
    "TICK": "EVENT",
    "TICK_5": "TICK",
    "TICK_60": "TICK",
    "TICK_3600": "TICK",
    "PROCESS_GROUP": "EVENT",
    "PROCESS_GROUP_ADDED": "PROCESS_GROUP",
    "PROCESS_GROUP_REMOVED": "PROCESS_GROUP",
    # Arbiter's web side: sent only to listeners that name ARBITER or one of these.
    "ARBITER": None,
    "ARBITER_WORKER": "ARBITER",
    "ARBITER_WORKER_BOOTED": "ARBITER_WORKER",
    "ARBITER_WORKER_EXITED": "ARBITER_WORKER",
    "ARBITER_WORKER_TIMEOUT": "ARBITER_WORKER",
    "ARBITER_RELOAD": "ARBITER",
    "ARBITER_RELOAD_STARTED": "ARBITER_RELOAD",
    "ARBITER_RELOAD_FINISHED": "ARBITER_RELOAD",
    "ARBITER_RELOAD_FAILED": "ARBITER_RELOAD",
}

TICK_PERIODS: dict[str, int] = {"TICK_5": 5, "TICK_60": 60, "TICK_3600": 3600}


def lineage(name: str) -> Iterable[str]:
    """The type and its ancestors, nearest first (`PROCESS_STATE_EXITED`, `PROCESS_STATE`, `EVENT`)."""
    current: str | None = name
    while current is not None:
        yield current
        current = PARENTS[current]


def subscribed(subscriptions: frozenset[str], name: str) -> bool:
    """Whether a listener subscribed to `subscriptions` gets an event of type `name`."""
    return any(ancestor in subscriptions for ancestor in lineage(name))


def check_names(names: Iterable[str]) -> frozenset[str]:
    """The subscription set, or ValueError naming the first unknown event type."""
    result = set()
    for raw in names:
        name = raw.strip().upper()
        if name not in PARENTS:
            raise ValueError(f"an event type such as PROCESS_STATE or TICK_60 (unknown: {raw.strip()!r})")
        result.add(name)
    if not result:
        raise ValueError("at least one event type")
    return frozenset(result)


@dataclass
class Event:
    """One event: its type, its payload, and the serials given when it was first buffered.

    `serial` is global (one counter for all pools); `pool_serials` one per pool that accepted it,
    kept when a rejected event is buffered again, as Supervisor does. `context` carries what a
    `result_handler` may want to look at (the process name, group and pid)."""

    name: str
    payload: str
    serial: int = -1
    pool_serials: dict[str, int] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"Undecodable: {data!r}"


def process_state(state: str, name: str, group: str, from_state: str, *, tries: int = 0,
                  expected: bool = True, pid: int | None = None) -> Event:
    """`PROCESS_STATE_<state>`: the extra fields depend on the state, as in Supervisor."""
    fields = [("processname", name), ("groupname", group), ("from_state", from_state)]
    if state in ("STARTING", "BACKOFF"):
        fields.append(("tries", str(tries)))
    elif state == "EXITED":
        fields += [("expected", str(int(expected))), ("pid", str(pid or 0))]
    elif state in ("RUNNING", "STOPPING", "STOPPED"):
        fields.append(("pid", str(pid or 0)))
    payload = " ".join(f"{key}:{value}" for key, value in fields)
    return Event(f"PROCESS_STATE_{state}", payload, context={"processname": name, "groupname": group, "pid": pid})


def process_log(channel: str, name: str, group: str, pid: int, data: bytes) -> Event:
    """`PROCESS_LOG_STDOUT/STDERR`: a chunk of a program's output (with `*_events_enabled`)."""
    payload = f"processname:{name} groupname:{group} pid:{pid} channel:{channel}\n{_decode(data)}"
    return Event(f"PROCESS_LOG_{channel.upper()}", payload, context={"processname": name, "groupname": group,
                                                                     "pid": pid, "channel": channel})


def process_communication(channel: str, name: str, group: str, pid: int, data: bytes) -> Event:
    """`PROCESS_COMMUNICATION_STDOUT/STDERR`: what a program wrote between the two tokens."""
    payload = f"processname:{name} groupname:{group} pid:{pid}\n{_decode(data)}"
    return Event(f"PROCESS_COMMUNICATION_{channel.upper()}", payload,
                 context={"processname": name, "groupname": group, "pid": pid, "channel": channel})


def remote_communication(kind: str, data: str) -> Event:
    """`REMOTE_COMMUNICATION`, from `supervisor.sendRemoteCommEvent(type, data)`."""
    return Event("REMOTE_COMMUNICATION", f"type:{kind}\n{data}")


def supervisor_state(state: str) -> Event:
    """`SUPERVISOR_STATE_CHANGE_RUNNING/STOPPING`: an empty payload."""
    return Event(f"SUPERVISOR_STATE_CHANGE_{state}", "")


def group_change(added: bool, group: str) -> Event:
    """`PROCESS_GROUP_ADDED/REMOVED`."""
    return Event("PROCESS_GROUP_ADDED" if added else "PROCESS_GROUP_REMOVED", f"groupname:{group}\n")


def tick(name: str, when: int) -> Event:
    """`TICK_5/60/3600` with the wall-clock second its period began."""
    return Event(name, f"when:{when}")


def arbiter_event(name: str, body: str = "", **fields: object) -> Event:
    """One of Arbiter's own `ARBITER_*` events; fields in the order given, Supervisor's layout
    (`key:value` separated by spaces; a `body` of free text, such as a reason, after a newline)."""
    if PARENTS.get(name) not in ("ARBITER_WORKER", "ARBITER_RELOAD"):
        raise ValueError(f"not an Arbiter event type: {name}")
    payload = " ".join(f"{key}:{value}" for key, value in fields.items())
    if body:
        payload += "\n" + body
    return Event(name, payload, context=dict(fields))


def timeslice(period: int, when: float) -> int:
    """The start of the `period`-second slice that `when` falls in (Supervisor's rule)."""
    return int(when - (when % period))


def due_ticks(last: dict[str, int], now: float) -> list[Event]:
    """The tick events due at wall-clock `now`, updating `last` (slice starts by type).

    The first call only records the current slices, as Supervisor does at start: a tick is
    sent when a period boundary is crossed, never for the slice the master started in. This
    is the one place where the wall clock, not the monotonic one, is the point: listeners
    are told the wall-clock second a period began."""
    due = []
    for name, period in TICK_PERIODS.items():
        this = timeslice(period, now)
        if name not in last:
            last[name] = this
        elif this != last[name]:
            last[name] = this
            due.append(tick(name, this))
    return due


def envelope(event: Event, pool: str, server: str) -> bytes:
    """The header line and payload one listener of `pool` is sent."""
    header = (f"ver:3.0 server:{server} serial:{event.serial} pool:{pool} "
              f"poolserial:{event.pool_serials[pool]} eventname:{event.name} len:{len(event.payload)}\n")
    return (header + event.payload).encode("utf-8")
