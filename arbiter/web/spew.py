"""`--spew`: print every line a worker executes, as Gunicorn's debug aid does. Slow by nature;
for finding where a worker hangs, never for production."""

from __future__ import annotations

import linecache
import os
import sys
import threading
from types import FrameType
from typing import Any


def _trace(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "line":
        filename = frame.f_code.co_filename
        line = linecache.getline(filename, frame.f_lineno).rstrip()
        sys.stderr.write(f"[{os.getpid()}] {filename}:{frame.f_lineno}: {line}\n")
    return _trace


def spew() -> None:
    """Trace this thread and every thread started from now on."""
    sys.settrace(_trace)
    threading.settrace(_trace)
