"""Handing a `Command` to the master and routing its answer back to the right client.

The master may answer in the same turn or many turns later; by then the client may have gone,
or (keep-alive) be waiting for another request. Each command therefore remembers which request
of which connection it belongs to, answers at most once, and drops answers nobody waits for.
"""

from __future__ import annotations

import logging
import signal as signal_module
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from arbiter.control.backend import Backend, Command, ControlError
from arbiter.control.connection import HttpConnection
from arbiter.control.names import Program
from arbiter.control.records import CommandArgs


@dataclass(frozen=True)
class ProcessResult:
    """What a command did to one process: `status` is "OK" or an error code."""

    name: str
    group: str
    status: str
    description: str

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def submit(backend: Backend, conn: HttpConnection, log: logging.Logger, name: str, args: CommandArgs,
           on_reply: Callable[[Any], None], on_fail: Callable[[ControlError], None] | None = None) -> None:
    """Queue command `name` to the master; call `on_reply`/`on_fail` when it answers, if the
    request is still waiting then. Errors in those callbacks are logged, never raised into the
    master (which calls them from its own code)."""
    request_id = conn.request_id
    answered = False

    def waiting() -> bool:
        nonlocal answered
        if answered:
            log.warning("control: command %r answered twice; the second answer is ignored", name)
            return False
        answered = True
        return not conn.closed and conn.in_flight and conn.request_id == request_id

    def reply(result: Any) -> None:
        if waiting():
            _guarded(log, conn, lambda: on_reply(result))

    def fail(error: ControlError) -> None:
        if not isinstance(error, ControlError):
            error = ControlError("FAILED", str(error))
        if waiting():
            _guarded(log, conn, lambda: (on_fail or conn.respond_error)(error))

    try:
        backend.submit(Command(name, args, reply, fail))
    except ControlError as exc:
        fail(exc)


def _guarded(log: logging.Logger, conn: HttpConnection, action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:
        log.exception("control: error answering a command")
        if conn.in_flight:
            conn.respond_error(ControlError("INTERNAL", "internal error; see the master's log"))


def process_results(reply: Any, matched: Sequence[Program]) -> list[ProcessResult]:
    """Per-process results in one shape, whether the master listed them or replied None."""
    if isinstance(reply, list) and all(isinstance(r, dict) for r in reply):
        out = []
        for r in reply:
            status = str(r.get("status") or "OK")
            name = str(r.get("name") or "")
            out.append(ProcessResult(name, str(r.get("group") or name), status,
                                     str(r.get("description") or ("OK" if status == "OK" else status))))
        return out
    return [ProcessResult(p.name, p.group or p.name, "OK", "OK") for p in matched]


def signal_name(value: Any) -> str:
    """"HUP", "SIGHUP", "1" or 1 as the bare name "HUP".

    Raises:
        ControlError: BAD_SIGNAL for anything that names no signal.
    """
    try:
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return signal_module.Signals(int(value)).name[3:]
        if isinstance(value, str) and value:
            text = value.upper()
            return signal_module.Signals["SIG" + text.removeprefix("SIG")].name[3:]
    except (KeyError, ValueError):
        pass
    raise ControlError("BAD_SIGNAL", f"{value!r} is not a signal name or number (e.g. HUP, TERM, 15)")


def scale_spec(value: Any) -> str:
    """"+N", "-N" or "=N" ("N" and a bare integer mean "=N").

    Raises:
        ControlError: BAD_ARGUMENTS otherwise.
    """
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if text.isdigit():
        text = "=" + text
    if len(text) < 2 or text[0] not in "+-=" or not text[1:].isdigit():
        raise ControlError("BAD_ARGUMENTS", f"scale expects +N, -N or =N, got {value!r}")
    return text
