"""In-place upgrade: the master re-executes itself with the same PID and keeps its workers.

Gunicorn's USR2 starts a second master with a new PID, which breaks systemd's idea of the main
process. Here the master calls execve() on itself: the PID, the children and every file
descriptor not marked close-on-exec survive. What the new image needs to carry on is written to
one environment variable: the listening sockets' fds by address, the scoreboard's fd, and the
running workers. The new image adopts all of it and rolls the workers over to its own code.

Before exec'ing, the master checks that the new code loads, in a child process
(`--check-config`): after execve() there is no old image to fall back to.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

ENV = "ARBITER_REEXEC"


@dataclass(frozen=True)
class AdoptedWorker:
    pid: int
    age: int
    generation: int
    slot: int
    ready: bool


@dataclass(frozen=True)
class HandOver:
    cwd: str
    listeners: dict[str, int]  # address text -> fd
    scoreboard_fd: int
    generation: int
    age: int
    target: int
    configured: int  # `workers` in the old config: a change in the new one wins over TTIN/TTOU
    workers: list[AdoptedWorker] = field(default_factory=list)

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, text: str) -> HandOver:
        data = json.loads(text)
        data["workers"] = [AdoptedWorker(**worker) for worker in data["workers"]]
        return cls(**data)


def take(environ: dict[str, str]) -> HandOver | None:
    """The hand-over left by the previous image, removed from the environment so that workers
    and programs never see it."""
    text = environ.pop(ENV, None)
    return HandOver.decode(text) if text else None


def command() -> list[str]:
    """The command line this interpreter was started with (`python -m arbiter ...` or the
    `arbiter` script), to run again."""
    return [sys.executable, *sys.orig_argv[1:]]


def check_command() -> list[str]:
    return [*command(), "--check-config"]


def reexec(handover: HandOver, inherit: Sequence[int], environ: Mapping[str, str]) -> None:
    """Replace this process image; returns only if execve() itself fails (raises OSError)."""
    for fd in inherit:
        os.set_inheritable(fd, True)
    env = dict(environ)
    env[ENV] = handover.encode()
    os.chdir(handover.cwd)
    os.execve(sys.executable, command(), env)
