"""Where the last reload stands: a leaf type shared by the pool, the upgrader, the master and
the control API (which shows it as text: "none", "in progress", "done" or "failed: <why>")."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ReloadPhase(enum.Enum):
    NONE = "none"  # no reload since the master started
    IN_PROGRESS = "in progress"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class ReloadState:
    """A phase, and for FAILED the reason (`error`)."""

    phase: ReloadPhase = ReloadPhase.NONE
    error: str = ""

    @classmethod
    def failed(cls, error: str) -> ReloadState:
        return cls(ReloadPhase.FAILED, error)

    @property
    def in_progress(self) -> bool:
        return self.phase is ReloadPhase.IN_PROGRESS

    @property
    def has_failed(self) -> bool:
        return self.phase is ReloadPhase.FAILED

    def __str__(self) -> str:
        """The text the control API and the logs show."""
        return f"failed: {self.error}" if self.has_failed else self.phase.value


NO_RELOAD = ReloadState()
RELOADING = ReloadState(ReloadPhase.IN_PROGRESS)
RELOAD_DONE = ReloadState(ReloadPhase.DONE)
