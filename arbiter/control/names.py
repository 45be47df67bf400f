"""Process names as Supervisor spells them: `prog`, `group:prog`, `group:*` (or `group:`), `all`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arbiter.control.backend import ControlError
from arbiter.control.records import ProgramRow
from arbiter.programs import names as naming

Program = ProgramRow


def namespec(program: Program) -> str:
    """`group:name`, or just `name` when the group is named after the program (Supervisor's
    `make_namespec`), which is how status lines and logs name a process."""
    return program.namespec


def matching(programs: Sequence[Program], name: str) -> list[Program]:
    """The status rows `name` designates, by the one rule the program manager uses too
    (`arbiter.programs.names.select`): a bare name is a process, else a program's pool, else
    a group; `group:*` a group; `all` everything."""
    return naming.select(programs, name, _named)[0]


def _named(program: Program) -> naming.Named:
    return naming.Named(program.group or program.name, program.name, program.program or program.name)


def select(programs: Sequence[Program], names: Sequence[str]) -> list[Program]:
    """The programs the names designate, each once, in status order.

    Raises:
        ControlError: BAD_NAME naming the first name that matches nothing.
    """
    chosen: list[Program] = []
    for name in names:
        found = matching(programs, name)
        if not found and name != "all":
            raise ControlError("BAD_NAME", f"no such process or group: {name}")
        chosen.extend(p for p in found if not any(p is q for q in chosen))
    return chosen


def find_one(programs: Sequence[Program], name: str) -> Program:
    """The single process `name` designates (a group of one counts).

    Raises:
        ControlError: BAD_NAME when nothing, or more than one process, matches.
    """
    found, single = naming.select(programs, name, _named) if name != "all" else ([], False)
    if not single and len(found) != 1:
        raise ControlError("BAD_NAME", f"no such process: {name}")
    return found[0]


def check_names(value: Any, *, required: bool = True) -> list[str]:
    """Validate a JSON `names` value: a non-empty list of non-empty strings.

    Raises:
        ControlError: BAD_ARGUMENTS describing what was expected.
    """
    if value is None and not required:
        return []
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list) or (required and not value)
            or not all(isinstance(v, str) and v for v in value)):
        raise ControlError("BAD_ARGUMENTS", f"'names' must be a non-empty list of process names, got {value!r}")
    return list(value)
