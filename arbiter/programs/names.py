"""Process names as Supervisor spells them: the one rule for what a name designates.

`prog`, `group:prog` or `group:*` (also `group:`), and `all`. The program manager selects its
processes with it, and the control API its status rows; both go through `select`, so a name
means the same thing everywhere. A leaf: it imports nothing of Arbiter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class Named(NamedTuple):
    """How one process is named: its group, its own name, and its program's name (which a
    `numprocs` pool shares: `pool` names `pool_00`, `pool_01`...)."""

    group: str
    name: str
    program: str


def select(items: Sequence[T], name: str, named: Callable[[T], Named]) -> tuple[list[T], bool]:
    """The items `name` designates, in their order, and whether it named exactly one process
    (rather than a group, a program's pool, or all).

    A bare name is first a process's name, else a program's (all its processes), else a
    group's; `group:x` is the process `x` of that group, else the processes of its program `x`.
    An empty list means the name designates nothing.
    """
    if name == "all":
        return list(items), False
    if ":" in name:
        group, _, rest = name.partition(":")
        members = [item for item in items if named(item).group == group]
        if members and rest in ("", "*"):
            return members, False
        chosen = [item for item in members if named(item).name == rest]
        if chosen:
            return chosen, len(chosen) == 1
        return [item for item in members if named(item).program == rest], False
    chosen = [item for item in items if named(item).name == name]
    if len(chosen) == 1:
        return chosen, True
    return (chosen or [item for item in items if named(item).program == name]
            or [item for item in items if named(item).group == name]), False
