"""What a program's output turns into besides its log: Supervisor's PROCESS_LOG_* events (with
`*_events_enabled`) and capture mode, where what a program writes between
`<!--XSUPERVISOR:BEGIN-->` and `<!--XSUPERVISOR:END-->` becomes one PROCESS_COMMUNICATION_*
event instead of log lines (with `*_capture_maxbytes` above 0; the last that many bytes are kept).

`Capture` is pure: bytes in, (bytes for the log, finished captures) out, with tokens that may be
split across reads. `OutputTap` sits between a pipe's reader and its log and publishes.
"""

from __future__ import annotations

from collections.abc import Callable

from arbiter.events.types import Event, process_communication, process_log

BEGIN_TOKEN = b"<!--XSUPERVISOR:BEGIN-->"
END_TOKEN = b"<!--XSUPERVISOR:END-->"


def _prefix_at_end(data: bytes, token: bytes) -> int:
    """How many bytes at the end of `data` could begin `token` (Supervisor keeps them back)."""
    for size in range(min(len(token) - 1, len(data)), 0, -1):
        if data.endswith(token[:size]):
            return size
    return 0


class Capture:
    """Capture mode for one stream: splits what is read into log bytes and captured messages."""

    def __init__(self, maxbytes: int) -> None:
        self.maxbytes = maxbytes
        self.capturing = False
        self._held = b""  # a possible token's beginning, kept until the next read decides
        self._captured = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, list[bytes]]:
        """(what goes to the log, the messages completed by this data)."""
        data = self._held + data
        self._held = b""
        out, done = bytearray(), []
        while data:
            token = END_TOKEN if self.capturing else BEGIN_TOKEN
            before, found, after = data.partition(token)
            if not found:
                keep = _prefix_at_end(data, token)
                if keep:
                    self._held, data = data[-keep:], data[:-keep]
                self._take(out, data)
                break
            self._take(out, before)
            if self.capturing:
                done.append(bytes(self._captured))
                self._captured.clear()
            self.capturing = not self.capturing
            data = after
        return bytes(out), done

    def _take(self, out: bytearray, data: bytes) -> None:
        if not self.capturing:
            out += data
            return
        self._captured += data
        if len(self._captured) > self.maxbytes:  # the last maxbytes, as Supervisor's capture log
            del self._captured[: len(self._captured) - self.maxbytes]


class OutputTap:
    """One stream of one child: events from its output, then the rest on to `downstream`.

    Args:
        channel: "stdout" or "stderr".
        name, group, pid: what the events name.
        log_events: publish PROCESS_LOG_<channel> for what goes to the log.
        capture_maxbytes: above 0, capture mode (PROCESS_COMMUNICATION_<channel>).
    """

    def __init__(self, channel: str, name: str, group: str, pid: int,
                 publish: Callable[[Event], None], downstream: Callable[[bytes | memoryview], None],
                 *, log_events: bool, capture_maxbytes: int) -> None:
        self._channel, self._name, self._group, self._pid = channel, name, group, pid
        self._publish, self._downstream = publish, downstream
        self._log_events = log_events
        self._capture = Capture(capture_maxbytes) if capture_maxbytes > 0 else None

    def write(self, data: bytes | memoryview) -> None:
        chunk = bytes(data)  # the reader's buffer is reused after this call
        messages: list[bytes] = []
        if self._capture is not None:
            chunk, messages = self._capture.feed(chunk)
        if chunk:
            self._downstream(chunk)
            if self._log_events:
                self._publish(process_log(self._channel, self._name, self._group, self._pid, chunk))
        for message in messages:
            self._publish(process_communication(self._channel, self._name, self._group, self._pid, message))
