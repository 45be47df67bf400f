"""What makes a program an event listener: `[eventlistener:NAME]` (or `[eventlisteners.NAME]` in
an arbiter.toml) holds the program keys plus `events`, `buffer_size` and `result_handler`, with
Supervisor's rules: `events` is required, `redirect_stderr` is refused (stderr mixed into the
protocol would break it), and `priority` defaults to -1 so listeners start first and stop last.

The result handler is named `module:attribute` and imported when the configuration is read, as
Supervisor does, so a name that does not resolve is a configuration error, found at start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.config.convert import to_positive_int, to_str
from arbiter.events.types import check_names

# Supervisor's default handler: `OK` is processed, anything else rejected. Named so that a
# config written for Supervisor that spells it out loads without Supervisor installed.
DEFAULT_HANDLER = "supervisor.dispatchers:default_handler"

Handler = Callable[[Any, bytes], Any]


@dataclass(frozen=True)
class ListenerConfig:
    """The event-listener part of a program."""

    events: frozenset[str]
    buffer_size: int = 10
    result_handler: str = DEFAULT_HANDLER


def _to_events(value: Any) -> frozenset[str]:
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return check_names(str(name) for name in names if str(name).strip())


def _to_handler(value: Any) -> str:
    spec = to_str(value).strip()
    if spec != DEFAULT_HANDLER:
        resolve_handler(spec)
    return spec


LISTENER_KEYS: dict[str, Callable[[Any], Any]] = {
    "events": _to_events,
    "buffer_size": to_positive_int,
    "result_handler": _to_handler,
}


def resolve_handler(spec: str) -> Handler | None:
    """The callable `module:attribute` names; None for Supervisor's default (ours is used).

    Raises:
        ValueError: it cannot be imported or resolved (the text says what was expected).
    """
    if spec == DEFAULT_HANDLER:
        return None
    module, _, attribute = spec.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in attribute.split(".") if attribute else ():
            found = getattr(found, part)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise ValueError(f"a result handler as module:function that can be imported ({exc})") from None
    if not attribute or not callable(found):
        raise ValueError("a result handler as module:function naming a callable")
    return found  # type: ignore[no-any-return]


def split_listener(raw: Mapping[str, Any], where: Callable[[str], str]) -> tuple[dict[str, Any], ListenerConfig]:
    """(the program keys, the listener part) of one listener section's raw values.

    Raises:
        ConfigError: no `events`, a bad listener value, or `redirect_stderr` turned on.
    """
    from arbiter.errors import ConfigError
    from arbiter.programs import values as v

    program = {key: value for key, value in raw.items() if key not in LISTENER_KEYS}
    values: dict[str, Any] = {}
    for key in LISTENER_KEYS:
        if key in raw:
            try:
                values[key] = LISTENER_KEYS[key](raw[key])
            except ValueError as exc:
                raise ConfigError(f"{where(key)} = {raw[key]!r}: expected {exc}") from None
    if "events" not in values:
        raise ConfigError(f"{where('')}: an event listener needs an 'events' line (for example "
                          "events = PROCESS_STATE,TICK_60)")
    try:
        redirect = v.to_bool(program.get("redirect_stderr", False))
    except ValueError:
        redirect = False  # the program keys' own check names it
    if redirect:
        raise ConfigError(f"{where('redirect_stderr')}: redirect_stderr=true is not allowed for an "
                          "event listener: its stderr would be mixed into the event protocol on stdout")
    program.setdefault("priority", -1)
    return program, ListenerConfig(**values)
