"""The listener protocol as the master reads it from one listener's stdout: a pure parser.

A listener starts ACKNOWLEDGED, writes `READY\\n` (READY), is sent one event (BUSY), answers
`RESULT <len>\\n<result>` and goes back to ACKNOWLEDGED until its next `READY\\n`. Anything else
is a protocol violation and leaves it UNKNOWN: it gets no more events until it is restarted.
The rules and their order are Supervisor's, so a listener written for Supervisor behaves the
same here. The result is judged by the pool's `result_handler` (a callable given to `feed`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

READY_TOKEN = b"READY\n"
RESULT_TOKEN = b"RESULT "
MAX_RESULT = 1 << 20  # a result longer than this is a protocol violation, not a buffer to grow


class ListenerState(enum.Enum):
    ACKNOWLEDGED = "ACKNOWLEDGED"
    READY = "READY"
    BUSY = "BUSY"
    UNKNOWN = "UNKNOWN"


class Verdict(enum.Enum):
    """What the result handler made of a result."""

    OK = "ok"  # processed: the event is done
    REJECTED = "rejected"  # the listener refused it: send it again
    ERROR = "error"  # the handler failed: the listener goes UNKNOWN, the event is sent again


@dataclass(frozen=True)
class Outcome:
    """One thing that happened on the listener's stdout, for the pool to act on."""

    kind: str  # "ready", "done", "rejected", "violation"
    detail: str = ""


class ListenerProtocol:
    """The state of one listener process, driven by the bytes it writes on stdout."""

    def __init__(self) -> None:
        self.state = ListenerState.ACKNOWLEDGED
        self._buffer = b""
        self._result_len: int | None = None

    def restart(self) -> None:
        """A new process of this listener: it starts over, ACKNOWLEDGED."""
        self.state = ListenerState.ACKNOWLEDGED
        self._buffer = b""
        self._result_len = None

    def export(self) -> dict[str, Any]:
        """Where it stands, for the image that takes over after an in-place upgrade."""
        return {"state": self.state.value, "buffer": self._buffer.decode("latin-1"),
                "result_len": self._result_len}

    def restore(self, saved: dict[str, Any]) -> None:
        self.state = ListenerState(saved["state"])
        self._buffer = str(saved["buffer"]).encode("latin-1")
        self._result_len = saved["result_len"]

    def sent(self) -> None:
        """An event was written to the listener's stdin."""
        if self.state is not ListenerState.READY:
            raise RuntimeError(f"an event sent to a listener in state {self.state.value}")
        self.state = ListenerState.BUSY

    def feed(self, data: bytes, judge: Callable[[bytes], Verdict]) -> list[Outcome]:
        """Take what the listener wrote; return what happened, in order."""
        self._buffer += data
        outcomes: list[Outcome] = []
        while self._buffer:
            before = (self.state, len(self._buffer), self._result_len)
            outcome = self._step(judge)
            if outcome is not None:
                outcomes.append(outcome)
            if (self.state, len(self._buffer), self._result_len) == before:
                break  # needs more bytes
        return outcomes

    def _step(self, judge: Callable[[bytes], Verdict]) -> Outcome | None:
        if self.state is ListenerState.UNKNOWN:
            self._buffer = b""  # a listener in UNKNOWN is ignored until it is restarted
            return None
        if self.state is ListenerState.ACKNOWLEDGED:
            if len(self._buffer) < len(READY_TOKEN):
                return None
            if self._buffer.startswith(READY_TOKEN):
                self._buffer = self._buffer[len(READY_TOKEN):]
                self.state = ListenerState.READY
                return Outcome("ready")
            return self._violation(f"expected READY, got {self._buffer[:40]!r}")
        if self.state is ListenerState.READY:
            return self._violation(f"wrote {self._buffer[:40]!r} while READY")
        # BUSY: a result line, then that many bytes.
        if self._result_len is None:
            end = self._buffer.find(b"\n")
            if end == -1:
                if len(self._buffer) > 64:
                    return self._violation(f"bad result line {self._buffer[:40]!r}", busy=True)
                return None
            line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            try:
                if not line.startswith(RESULT_TOKEN):
                    raise ValueError
                length = int(line[len(RESULT_TOKEN):])
                if not 0 <= length <= MAX_RESULT:
                    raise ValueError
            except ValueError:
                return self._violation(f"bad result line {line[:40]!r}", busy=True)
            self._result_len = length
        if len(self._buffer) < self._result_len:
            return None
        result, self._buffer = self._buffer[:self._result_len], self._buffer[self._result_len:]
        self._result_len = None
        verdict = judge(result)
        if verdict is Verdict.ERROR:
            return self._violation("the result handler failed on its result", busy=True)
        self.state = ListenerState.ACKNOWLEDGED
        return Outcome("done" if verdict is Verdict.OK else "rejected", result.decode("utf-8", "replace"))

    def _violation(self, reason: str, busy: bool = False) -> Outcome:
        self.state = ListenerState.UNKNOWN
        self._buffer = b""
        self._result_len = None
        # A violation while BUSY means the event was not handled: the pool sends it again.
        return Outcome("violation", reason + (" (event rejected)" if busy else ""))


def default_handler(result: bytes) -> Verdict:
    """Supervisor's default `result_handler`: `OK` is processed, anything else rejected."""
    return Verdict.OK if result == b"OK" else Verdict.REJECTED
