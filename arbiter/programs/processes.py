"""The set of processes and their ordering: priority, `depends_on`, groups, names, pids.

`ProcessSet` holds every `child.Process` in start order (priority, then the order they were
made in), knows which program each depends on and which depend on it, finds processes by name
(`names.select`) and by pid, and answers the ordering questions: may this one start, which stop
first at shutdown. It feeds no state machine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from arbiter.programs import errors
from arbiter.programs import states as st
from arbiter.programs.child import Process
from arbiter.programs.config import ProcessSpec
from arbiter.programs.intent import Want
from arbiter.programs.names import Named, select

S = st.ProcessStates


class ProcessSet:
    """Every process, ordered.

    Args:
        make: builds a `Process` for a spec, given its order number.
    """

    def __init__(self, make: Callable[[ProcessSpec, int], Process]) -> None:
        self._make = make
        self._made = 0
        self._procs: list[Process] = []
        self._by_program: dict[str, list[Process]] = {}
        self._dependents: dict[Process, list[Process]] = {}
        self._by_pid: dict[int, Process] = {}

    def __iter__(self) -> Iterator[Process]:
        return iter(list(self._procs))

    def add(self, spec: ProcessSpec) -> Process:
        """Make a process for `spec` and add it (call `reindex` once done adding)."""
        self._made += 1
        proc = self._make(spec, self._made)
        self._procs.append(proc)
        return proc

    def forget(self, proc: Process) -> None:
        """Drop `proc`; a pid it still has (UNKNOWN) is forgotten with it, as Supervisor does."""
        self._procs.remove(proc)
        if self._by_pid.get(proc.record.pid) is proc:
            del self._by_pid[proc.record.pid]

    def reindex(self) -> None:
        """Order by priority; map program names and dependents, leaving out what is removed."""
        self._procs.sort(key=lambda p: (p.priority, p.order))
        self._by_program = {}
        self._dependents = {proc: [] for proc in self._procs}
        for proc in self.active():
            self._by_program.setdefault(proc.spec.program.name, []).append(proc)
        for proc in self.active():
            for dep in proc.spec.program.depends_on:
                for needed in self._by_program[dep]:
                    self._dependents[needed].append(proc)

    def active(self) -> list[Process]:
        """Every process but those of removed groups still stopping."""
        return [proc for proc in self._procs if proc.intent.want is not Want.REMOVE]

    # ---- pids ---------------------------------------------------------------------------------

    def spawned(self, proc: Process, pid: int) -> None:
        self._by_pid[pid] = proc

    def owns(self, pid: int) -> bool:
        return pid in self._by_pid

    def reaped(self, pid: int) -> Process | None:
        """The process whose child `pid` was, no longer mapped; None if not ours."""
        return self._by_pid.pop(pid, None)

    # ---- names --------------------------------------------------------------------------------

    def select(self, name: str, include_removing: bool = False) -> tuple[list[Process], bool]:
        """The processes `name` means (`names.select`), and whether it named exactly one.
        Processes of a removed group, still stopping, are left out unless `include_removing`.

        Raises:
            BadName: it names nothing.
        """
        procs = list(self._procs) if include_removing else self.active()
        chosen, single = select(procs, name, _named)
        if not chosen:
            raise errors.BadName(name)
        return chosen, single

    def one(self, name: str) -> Process:
        """The one process `name` designates.

        Raises:
            BadName: no process, or several, by that name.
        """
        procs, single = self.select(name)
        if not single and len(procs) != 1:
            raise errors.BadName(f"{name} names {len(procs)} processes; name one of them")
        return procs[0]

    # ---- ordering -----------------------------------------------------------------------------

    def needed(self, proc: Process) -> list[Process]:
        """The processes of the programs `proc` depends on."""
        return [needed for dep in proc.spec.program.depends_on for needed in self._by_program[dep]]

    def program(self, name: str) -> list[Process]:
        return list(self._by_program[name])

    def deps_running(self, proc: Process) -> bool:
        return all(needed.state is S.RUNNING for needed in self.needed(proc))

    def blocked(self, proc: Process) -> bool:
        """A program `proc` depends on is FATAL: it will not start until someone starts that."""
        return any(needed.state is S.FATAL for needed in self.needed(proc))

    def next_to_stop(self) -> list[Process]:
        """At shutdown, the next wave to stop: none while one is still stopping; else of the
        started processes no other started one depends on, those of the highest priority number
        (as Supervisor stops one priority at a time)."""
        if any(proc.state is S.STOPPING for proc in self._procs):
            return []
        live = [proc for proc in self._procs if proc.state in st.STARTED_STATES]
        if not live:
            return []
        free = [p for p in live if not any(d in live for d in self._dependents.get(p, ()))] or live
        top = max(p.priority for p in free)
        return [proc for proc in free if proc.priority == top]

    def all_stopped(self) -> bool:
        return all(proc.state in st.STOPPED_STATES for proc in self._procs)


def _named(proc: Process) -> Named:
    return Named(proc.spec.group, proc.spec.name, proc.spec.program.name)
