"""Which PROCESS_STATE_* events one step of the state machine makes: pure.

One `states.transition` may pass through states on its way (an exit that restarts goes
RUNNING -> EXITED -> STARTING; spent retries go STARTING -> BACKOFF -> FATAL, which Supervisor
takes in two turns). Supervisor sends one event per state entered, so listeners such as
crashmail (EXITED) see each; this names them, in order, with Supervisor's fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.programs import states as st

S = st.ProcessStates


@dataclass(frozen=True)
class Change:
    """One state entered: the fields of its PROCESS_STATE_* event."""

    state: S
    from_state: S
    tries: int = 0
    expected: bool = True
    pid: int = 0


def changes(before: st.ProcessRecord, after: st.ProcessRecord, event: st.Event,
            rules: st.Rules) -> list[Change]:
    """The states entered when `event` took the record from `before` to `after`."""
    if isinstance(event, st.Exited) and before.pid:
        return _exit_path(before, after, event, rules)
    if after.state is S.FATAL and before.state is S.STARTING:
        # STARTING -> BACKOFF -> FATAL: the last try, then giving up.
        return [Change(S.BACKOFF, S.STARTING, tries=before.backoff + 1), Change(S.FATAL, S.BACKOFF)]
    if after.state is before.state:
        return []
    return [_entered(after.state, before.state, after, before.pid)]


def _entered(state: S, from_state: S, after: st.ProcessRecord, pid: int) -> Change:
    return Change(state, from_state, tries=after.backoff, pid=after.pid or pid)


def _exit_path(before: st.ProcessRecord, after: st.ProcessRecord, event: st.Exited,
               rules: st.Rules) -> list[Change]:
    pid = before.pid
    path: list[Change] = []
    if before.state is S.STOPPING:
        path.append(Change(S.STOPPED, S.STOPPING, pid=pid))
        last = S.STOPPED
    elif after.state in (S.BACKOFF, S.FATAL) and before.state is S.STARTING:
        path.append(Change(S.BACKOFF, S.STARTING, tries=before.backoff + 1))
        if after.state is S.FATAL:
            path.append(Change(S.FATAL, S.BACKOFF))
        return path
    else:
        origin = before.state
        if origin is S.STARTING:
            # It outlived startsecs before its exit was seen: it was RUNNING (Supervisor would
            # have said so on an earlier turn).
            path.append(Change(S.RUNNING, S.STARTING, pid=pid))
            origin = S.RUNNING
        code, _ = st.describe_wait_status(event.status)
        path.append(Change(S.EXITED, origin, expected=code in rules.exitcodes, pid=pid))
        last = S.EXITED
    if after.state is S.STARTING:
        path.append(Change(S.STARTING, last, tries=after.backoff))
    return path
