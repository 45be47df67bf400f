"""Converters from a raw setting value (a string from the command line or the environment, or a
TOML/Python value) to its typed value. Each raises `ValueError` whose text says what was
expected ("an integer of at least 1"), which the loaders turn into an error naming the source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError("an integer")


def to_positive_int(value: Any) -> int:
    number = to_int(value)
    if number < 1:
        raise ValueError("an integer of at least 1")
    return number


def to_non_negative_int(value: Any) -> int:
    number = to_int(value)
    if number < 0:
        raise ValueError("an integer of at least 0")
    return number


def to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number of seconds") from None
    if number < 0:
        raise ValueError("a number of seconds of at least 0")
    return number


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false")


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def to_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    return to_str(value)


def to_str_list(value: Any) -> tuple[str, ...]:
    """A list of strings; a single string is one item (as Gunicorn's `bind = "x"` is)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("a string or a list of strings")


def to_comma_list(value: Any) -> tuple[str, ...]:
    """Comma-separated in a string (`"10.0.0.1,10.0.0.2"`), or a list."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return to_str_list(value)


def to_refork_thresholds(value: Any) -> tuple[int, ...]:
    """`50,100,1000` (or a list): request counts, each above the one before; empty means off."""
    items = to_comma_list(value) if isinstance(value, str) else value
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise ValueError("request counts separated by commas, such as 50,100,1000")
    try:
        numbers = tuple(to_int(item) for item in items)
    except ValueError:
        numbers = (0,)
    if any(n <= 0 for n in numbers) or any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        raise ValueError("positive request counts, each larger than the one before (50,100,1000)")
    return numbers


def to_umask(value: Any) -> int:
    """An octal mode: `0o22`, `"022"` and `"0o22"` all mean the same, as in Gunicorn."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            number = int(text, 8)
        except ValueError:
            raise ValueError("an octal mode such as 022") from None
    else:
        raise ValueError("an octal mode such as 022")
    if not 0 <= number <= 0o777:
        raise ValueError("an octal mode between 000 and 777")
    return number


def to_log_level(value: Any) -> str:
    text = to_str(value).strip().lower()
    if text == "warn":
        text = "warning"
    if text not in LOG_LEVELS:
        raise ValueError("one of " + ", ".join(LOG_LEVELS))
    return text


def to_hook(value: Any) -> Callable[..., Any] | None:
    if value is None:
        return None
    if callable(value):
        hook: Callable[..., Any] = value
        return hook
    raise ValueError("a function")


def to_env_pairs(value: Any) -> tuple[str, ...]:
    items = to_str_list(value)
    for item in items:
        if "=" not in item:
            raise ValueError(f"KEY=VALUE pairs (got {item!r})")
    return items


_SIZE_UNITS = {"": 1 << 20, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
               "G": 1 << 30, "GB": 1 << 30, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def to_size(value: Any) -> int:
    """A size in bytes: a bare number is MiB; `512MB`, `1GB`, `200KB` use 1024-based units, as
    superlance's memmon reads them. The one parser for every size a user gives Arbiter."""
    if isinstance(value, bool):
        raise ValueError("a size such as 512MB")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        digits = text.rstrip("KMGIB")
        number_text, unit = digits, text[len(digits):]
        try:
            number = float(number_text)
        except ValueError:
            raise ValueError("a size such as 512MB, 1GB or a number of MiB") from None
    else:
        raise ValueError("a size such as 512MB")
    if unit not in _SIZE_UNITS:
        raise ValueError("a size with a unit of B, KB, MB or GB")
    if number < 0:
        raise ValueError("a size of at least 0")
    return int(number * _SIZE_UNITS[unit])
