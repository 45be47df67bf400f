"""Converters for program settings, accepting what Supervisor accepts and TOML's native types.

Each takes a raw value (a string from an INI file, or a TOML value) and returns the typed value,
or raises `ValueError` whose text says what was expected; the loaders add file, section and key.
"""

from __future__ import annotations

import pwd
import re
import signal
from typing import Any

from arbiter.config.convert import to_bool, to_comma_list, to_int, to_non_negative_int, to_seconds, to_umask
from arbiter.programs.states import Autorestart

__all__ = [
    "AUTO", "MASTER", "to_autorestart", "to_bool", "to_byte_size", "to_environment", "to_exitcodes",
    "to_int", "to_logfile", "to_names", "to_non_negative_int", "to_seconds", "to_signal", "to_umask",
    "to_user",
]

# stdout_logfile / stderr_logfile special values.
AUTO = "AUTO"  # Supervisor's: a file of its own in childlogdir
MASTER = "-"  # ours: the master's stdout (stderr for stderr_logfile), lines prefixed `name | `

_SIZE = re.compile(r"^\s*(\d+)\s*(kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def to_byte_size(value: Any) -> int:
    """`1024`, `"1KB"`, `"50MB"`, `"1GB"` (Supervisor's units; 1KB is 1024 bytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError("a byte size such as 1024, 500KB, 50MB or 1GB")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _UNITS[unit]


def to_signal(value: Any) -> int:
    """A signal by name, with or without SIG (`TERM`, `SIGTERM`, `term`), or by number."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        member = getattr(signal.Signals, name, None) if not name.startswith("SIG_") else None
        if member is None:
            raise ValueError("a signal name such as TERM, INT, QUIT, HUP, KILL, USR1 or USR2")
        return int(member)
    else:
        raise ValueError("a signal name such as TERM, or a signal number")
    if number not in set(signal.Signals):
        raise ValueError("a valid signal number")
    return number


def to_exitcodes(value: Any) -> tuple[int, ...]:
    """`"0,2"`, `[0, 2]` or `0`; each between 0 and 255."""
    if isinstance(value, bool):
        raise ValueError("exit codes between 0 and 255, such as 0,2")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError("exit codes between 0 and 255, such as 0,2")
    codes = []
    for item in items:
        try:
            code = to_int(item)
        except ValueError:
            raise ValueError("exit codes between 0 and 255, such as 0,2") from None
        if not 0 <= code <= 255:
            raise ValueError("exit codes between 0 and 255, such as 0,2")
        codes.append(code)
    return tuple(codes)


def to_autorestart(value: Any) -> Autorestart:
    if isinstance(value, str) and value.strip().lower() == "unexpected":
        return Autorestart.UNEXPECTED
    try:
        return Autorestart.ALWAYS if to_bool(value) else Autorestart.NEVER
    except ValueError:
        raise ValueError("true, false or unexpected") from None


def to_logfile(value: Any) -> str | None:
    """`AUTO`, `NONE`/`OFF` (discard: the child writes to /dev/null), `-`, or a path."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a path, AUTO, NONE or - (the master's own output)")
    text = value.strip()
    if text.lower() == "auto":
        return AUTO
    if text.lower() in ("none", "off"):
        return None
    return text


def to_user(value: Any) -> str:
    """A user name or uid that exists on this machine (checked now, as Supervisor does)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a user name or uid")
    text = value.strip()
    try:
        pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        raise ValueError("an existing user name or uid") from None
    return text


def to_names(value: Any) -> tuple[str, ...]:
    """Program names: `"a,b"` or `["a", "b"]`."""
    return to_comma_list(value)


def to_environment(value: Any) -> dict[str, str]:
    """`{A = "1"}` (TOML), or Supervisor's `A="x y",B=c,LIST="a,b,c"` (quotes keep commas)."""
    if isinstance(value, dict):
        env = {}
        for key, item in value.items():
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, (str, int, float)):
                raise ValueError(f"a table of strings; {key} is {type(item).__name__}")
            env[str(key)] = str(item)
        return env
    if not isinstance(value, str):
        raise ValueError('KEY="value",KEY2=value2 pairs, or a table')
    return _parse_pairs(value)


def _parse_pairs(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    i, end = 0, len(text)
    while i < end:
        eq = text.find("=", i)
        key = text[i:eq].strip() if eq >= 0 else text[i:].strip()
        if eq < 0 or not key or re.search(r"[\s,\"']", key):
            if not key and eq < 0:
                break  # trailing comma or blank
            raise ValueError(f'KEY="value",KEY2=value2 pairs; cannot read a pair at {text[i:]!r}')
        i = eq + 1
        while i < end and text[i].isspace():
            i += 1
        parts: list[str] = []
        quoted_tail = False
        while i < end and text[i] != ",":
            if text[i] in "\"'":
                close = text.find(text[i], i + 1)
                if close < 0:
                    raise ValueError(f"KEY=\"value\" pairs; the quote after {key}= is not closed")
                parts.append(text[i + 1:close])
                i, quoted_tail = close + 1, True
            else:
                stop = i
                while stop < end and text[stop] not in ",\"'":
                    stop += 1
                parts.append(text[i:stop])
                i, quoted_tail = stop, False
        if parts and not quoted_tail:
            parts[-1] = parts[-1].rstrip()  # whitespace before the comma, not inside quotes
        env[key] = "".join(parts)
        i += 1  # the comma
    return env
