"""Process names as Supervisor spells them: `prog`, `group:prog`, `group:*` (or `group:`), `all`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arbiter.control.backend import ControlError
from arbiter.control.records import ProgramRow

Program = ProgramRow


def namespec(program: Program) -> str:
    """`group:name`, or just `name` when the group is named after the program (Supervisor's
    `make_namespec`), which is how status lines and logs name a process."""
    return program.namespec


def matches(program: Program, name: str) -> bool:
    """Whether `name` designates `program`: a bare name matches a process or a whole group."""
    if name == "all":
        return True
    group = program.group or program.name
    if name.endswith(":*") or name.endswith(":"):
        return group == name.rsplit(":", 1)[0]
    if ":" in name:
        return f"{group}:{program.name}" == name
    return program.name == name or group == name


def select(programs: Sequence[Program], names: Sequence[str]) -> list[Program]:
    """The programs the names designate, each once, in status order.

    Raises:
        ControlError: BAD_NAME naming the first name that matches nothing.
    """
    chosen: list[Program] = []
    for name in names:
        found = [p for p in programs if matches(p, name)]
        if not found and name != "all":
            raise ControlError("BAD_NAME", f"no such process or group: {name}")
        chosen.extend(p for p in found if not any(p is q for q in chosen))
    return chosen


def find_one(programs: Sequence[Program], name: str) -> Program:
    """The single process `name` designates (a group of one counts).

    Raises:
        ControlError: BAD_NAME when nothing, or more than one process, matches.
    """
    found = [p for p in programs if matches(p, name)] if name != "all" else []
    if len(found) != 1:
        exact = [p for p in found if namespec(p) == name or p.name == name]
        if len(exact) != 1:
            raise ControlError("BAD_NAME", f"no such process: {name}")
        found = exact
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
