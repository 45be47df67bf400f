"""Where processes stand against a `wait` goal ("running" or "stopped"): the questions the
control API asks while it waits for a start, stop or restart to settle. Read-only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from arbiter.programs import states as st
from arbiter.programs.child import Process
from arbiter.programs.intent import will_start
from arbiter.programs.processes import ProcessSet
from arbiter.programs.states import ProcessStates as S


class Progress(NamedTuple):
    """Where one process stands against a `wait` goal."""

    name: str
    group: str
    reached: bool | None
    why_not: str
    spawn_error: bool = False  # it could not start, or exited within startsecs (Supervisor's spawnerr)


def progress(procs: ProcessSet, names: Sequence[str], goal: str) -> list[Progress]:
    """Per process named (each once, in status order): True once it reached `goal`, False as
    soon as it will not get there by itself (`states.goal_reached`), None until then; and why.

    A process of a removed group still counts while it stops; once forgotten its name is gone.

    Raises:
        BadName: a name that selects nothing. ValueError: another goal.
    """
    chosen: dict[Process, None] = {}
    for name in names:
        chosen.update(dict.fromkeys(procs.select(name, include_removing=True)[0]))
    out = []
    for proc in procs:
        if proc in chosen:
            starting = will_start(proc.intent, proc.record, blocked=procs.blocked(proc))
            reached = st.goal_reached(proc.state, goal, starting=starting)
            out.append(Progress(proc.spec.name, proc.spec.group, reached, _why_not(proc, goal),
                                spawn_error=bool(proc.record.spawnerr)))
    return out


def settled(progress: Sequence[Progress]) -> bool | None:
    """True when every process reached its goal, False when one will not, else None."""
    verdicts = {p.reached for p in progress}
    return False if False in verdicts else None if None in verdicts else True


def _why_not(proc: Process, goal: str) -> str:
    rec = proc.record
    if goal == "running" and rec.state in (S.BACKOFF, S.FATAL):
        return rec.spawnerr or f"{proc.fullname} entered {rec.state.name}"
    return f"{proc.fullname} is {rec.state.name}, not {goal.upper()}"
