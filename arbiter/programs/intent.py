"""What the user or the configuration wants of one process, and the pure rule that turns that
wish and the process's state into the next step.

`states.transition` moves a process between Supervisor's states; this module decides *when* to
feed it: a start waits until the programs it depends on run, a removed process is forgotten
once stopped, a changed one takes up its new configuration once stopped. Like `states`, it
reads no clock and touches no OS; it imports only `states`.

To answer "will this process start?" read `Intent` and `will_start`: nothing else holds it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from arbiter.programs.states import STARTED_STATES, STOPPED_STATES, ProcessRecord
from arbiter.programs.states import ProcessStates as S


class Want(enum.Enum):
    """The one wish a process carries besides what the state machine is doing."""

    NOTHING = "nothing"  # leave it where the state machine has it
    START = "start"  # start it once every program it depends on is RUNNING
    REMOVE = "remove"  # stop it, then forget it (its group was removed)
    REPLACE = "replace"  # stop it, then take up its new configuration (and start if `start`)


@dataclass(frozen=True)
class Intent:
    """`want`, and with it:

    - `admin` (START): a person asked, so the retry count starts afresh; autostart did not.
    - `start` (REPLACE): start it with the new configuration once the old one stopped.
    """

    want: Want = Want.NOTHING
    admin: bool = False
    start: bool = False


NOTHING = Intent()


class Step(enum.Enum):
    """What the manager does next for one process (see `next_step`)."""

    WAIT = "wait"  # nothing now
    START = "start"  # feed StartRequested(admin=intent.admin), and the intent is spent
    DROP = "drop"  # the queued start is moot (already started, or a stop is running)
    STOP = "stop"  # feed StopRequested (it must stop before it is removed or replaced)
    FORGET = "forget"  # stopped and removed: forget it
    SWAP = "swap"  # stopped: take up the new configuration; the intent becomes `after_swap`


def next_step(intent: Intent, record: ProcessRecord, *, deps_running: bool, shutting_down: bool) -> Step:
    """The next step for a process whose wish is `intent` and whose machine is at `record`.

    Args:
        deps_running: every program it depends on is RUNNING.
        shutting_down: the master is stopping everything; nothing starts any more.
    """
    state = record.state
    if intent.want in (Want.REMOVE, Want.REPLACE):
        if state in STOPPED_STATES:
            return Step.FORGET if intent.want is Want.REMOVE else Step.SWAP
        # A restart in progress must not spawn again with the old settings: a stop drops it.
        if state in STARTED_STATES or (state is S.STOPPING and record.restart_pending):
            return Step.STOP
        return Step.WAIT
    if intent.want is Want.START and not shutting_down:
        if state in STARTED_STATES or state is S.STOPPING:
            return Step.DROP
        return Step.START if deps_running else Step.WAIT
    return Step.WAIT


def after_swap(intent: Intent, *, shutting_down: bool) -> Intent:
    """The wish left once a replaced process took up its new configuration: a start with a
    fresh retry count if one was asked for (and the master is not stopping), else nothing."""
    if intent.start and not shutting_down:
        return Intent(Want.START, admin=True)
    return NOTHING


def queue_start(intent: Intent, *, admin: bool) -> Intent:
    """Ask for a start. A process being replaced starts once it took up its new configuration;
    a queued start asked by a person stays one (autostart must not demote it)."""
    if intent.want is Want.REPLACE:
        return replace(intent, start=True)
    if intent.want is Want.START:
        return replace(intent, admin=intent.admin or admin)
    if intent.want is Want.REMOVE:
        return intent
    return Intent(Want.START, admin=admin)


def drop_start(intent: Intent) -> tuple[Intent, bool]:
    """Cancel a start that has not happened yet; and whether one was queued."""
    if intent.want is Want.START:
        return NOTHING, True
    if intent.want is Want.REPLACE and intent.start:
        return replace(intent, start=False), True
    return intent, False


def will_start(intent: Intent, record: ProcessRecord, *, blocked: bool = False) -> bool:
    """Whether a start is on its way that the state does not show yet: queued (and not blocked
    by a FATAL program it depends on), due once a stop ends, or due once a replacement is done.
    """
    if intent.want is Want.START:
        return not blocked
    return record.restart_pending or (intent.want is Want.REPLACE and intent.start)


def was_started(intent: Intent, record: ProcessRecord) -> bool:
    """Started, or about to be: what a changed configuration keeps (it starts the new one)."""
    return record.state in STARTED_STATES or will_start(intent, record)
