"""What one setting declares (`Setting`), and the helpers that make a `Config` field of it.

Kept apart from the table itself (settings.py), so the table reads as a list of settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.config.convert import to_hook, to_umask

# The order of the sections in `arbiter --help` and docs/settings.md: the common ones first, in
# Gunicorn's order, then Arbiter's own, then what is there only so Gunicorn's flags are accepted.
SECTIONS: dict[str, str] = {
    "config": "Config",
    "socket": "Socket",
    "worker": "Worker",
    "security": "Security",
    "server": "Server",
    "logging": "Logging",
    "ssl": "SSL",
    "debugging": "Debugging",
    "control": "Control",
    "programs": "Programs",
    "metrics": "Metrics",
    "gunicorn": "Gunicorn compatibility",
    "hooks": "Hooks",
}


@dataclass(frozen=True)
class Setting:
    """One setting's declaration: what the CLI, the loaders and the docs need to know of it."""

    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    flags: Sequence[str] = ()
    metavar: str = ""
    multiple: bool = False  # the flag may be repeated; values accumulate
    is_flag: bool = False  # a boolean switch on the command line
    section: str = "server"
    # An environment variable Gunicorn users expect to work, read under the config file.
    env_default: str | None = None
    # What the flag stores when given without a value: a switch (`is_flag`) stores this; an
    # option with a value may be given bare too when this is not None (`--proxy-protocol`).
    flag_value: Any = None
    # Gunicorn's settings Arbiter has no use for: why a value other than the default is ignored
    # (one line in the log at start) or refused (an error at start). Empty for real settings.
    ignored: str = ""
    refused: str = ""

    @property
    def env(self) -> str:
        return "ARBITER_" + self.name.upper()

    def shown_default(self) -> str:
        """The default as a user writes it: `0600` for a mode, `a,b` for a list; "" for none."""
        value = self.default
        if value is None or value == () or value == {} or (value is False and self.is_flag):
            return ""
        if self.convert is to_umask:
            return f"{value:04o}"
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value)
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)


def setting(
    convert: Callable[[Any], Any],
    default: Any,
    help: str,
    flags: Sequence[str] = (),
    *,
    metavar: str = "",
    multiple: bool = False,
    is_flag: bool = False,
    section: str = "server",
    env_default: str | None = None,
    flag_value: Any = None,
    ignored: str = "",
    refused: str = "",
) -> Any:
    """A `Config` field carrying its `Setting` (its name is filled in from the field's)."""
    if is_flag and flag_value is None:
        flag_value = True
    meta = Setting("", convert, default, help, tuple(flags), metavar, multiple, is_flag, section, env_default,
                   flag_value, ignored, refused)
    if isinstance(default, dict):  # a dataclass field refuses a shared mutable default
        return field(default_factory=lambda: dict(default), metadata={"setting": meta})
    return field(default=default, metadata={"setting": meta})


def hook(signature: str) -> Any:
    """A `Config` field for a server hook, set only in a Python config file (as in Gunicorn)."""
    return setting(to_hook, None, f"Server hook `{signature}`, set in a Python config file.", section="hooks")


def ignored(convert: Callable[[Any], Any], default: Any, flags: Sequence[str], why: str, *,
            metavar: str = "", is_flag: bool = False, multiple: bool = False) -> Any:
    """A Gunicorn setting accepted for compatibility that has no effect here; `why` says why."""
    return setting(convert, default, f"Accepted and ignored: {why}.", flags, metavar=metavar, is_flag=is_flag,
                   multiple=multiple, section="gunicorn", ignored=why)


def refused(convert: Callable[[Any], Any], default: Any, flags: Sequence[str], why: str, *,
            metavar: str = "", is_flag: bool = False, multiple: bool = False) -> Any:
    """A Gunicorn setting whose default is Arbiter's behaviour; any other value stops the start."""
    return setting(convert, default, f"Only the default: {why}.", flags, metavar=metavar, is_flag=is_flag,
                   multiple=multiple, section="gunicorn", refused=why)


@dataclass(frozen=True)
class Extras:
    """What a config file holds beyond the flat settings: programs, groups, and warnings about
    what it asked for that Arbiter does not do (yet)."""

    programs: tuple[Any, ...] = ()  # ProgramConfig records (the programs layer sits above this one)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # A supervisord.conf's [inet_http_server] (username, password): the TCP control API's Basic
    # auth credential. None when the file has no such section. A secret: never printed.
    http_auth: tuple[str | None, str | None] | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()  # facts the start log states (which file was read, and why)
