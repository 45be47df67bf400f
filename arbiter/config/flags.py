"""The command-line options, generated from the settings table: one click option per setting
with flags, listed in `--help` by section (the common ones first, as Gunicorn lists them).

The same parser reads the command line and `$GUNICORN_CMD_ARGS`, so both accept the same flags.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import Any

import click

from arbiter.config.setting import SECTIONS, Setting
from arbiter.config.settings import SETTINGS
from arbiter.errors import ConfigError


def _option(setting: Setting) -> click.Option:
    kwargs: dict[str, Any] = {"help": setting.help, "default": None, "show_default": False}
    if setting.is_flag:
        kwargs.update(is_flag=True, flag_value=setting.flag_value, default=None)
    elif setting.multiple:
        kwargs.update(multiple=True, default=(), metavar=setting.metavar)
    else:
        kwargs.update(metavar=setting.metavar)
        if setting.flag_value is not None:  # the value may be left out: `--proxy-protocol`
            kwargs.update(is_flag=False, flag_value=setting.flag_value)
    shown = setting.shown_default()
    if shown and not setting.is_flag:
        kwargs["help"] += f"  [default: {shown}]"
    return click.Option([*setting.flags, setting.name], **kwargs)


def ordered() -> list[Setting]:
    """The settings with flags, by section in `SECTIONS` order, table order within a section."""
    rank = {name: index for index, name in enumerate(SECTIONS)}
    with_flags = [item for item in SETTINGS if item.flags]
    return sorted(with_flags, key=lambda item: rank.get(item.section, len(rank)))


class SectionedCommand(click.Command):
    """A command whose `--help` shows its options under one heading per section."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        by_name = {item.name: item for item in SETTINGS}
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            item = by_name.get(param.name or "")
            title = SECTIONS.get(item.section, item.section.title()) if item else "General"
            groups.setdefault(title, []).append(record)
        general = groups.pop("General", [])
        for title, records in [*groups.items(), ("General", general)]:
            with formatter.section(f"{title} options"):
                formatter.write_dl(records)


def make_command(callback: Callable[..., Any], **attrs: Any) -> click.Command:
    """The `arbiter` command: APP, then every setting's option, in help order."""
    params: list[click.Parameter] = [click.Argument(["app"], required=False)]
    params += [_option(item) for item in ordered()]
    return SectionedCommand("arbiter", callback=callback, params=params, **attrs)


def values(params: dict[str, Any], origin: str = "option {flag}", app_origin: str = "APP argument"
           ) -> dict[str, tuple[Any, str]]:
    """What was typed, keyed by setting name: (raw value, origin), the origin for error messages."""
    found: dict[str, tuple[Any, str]] = {}
    for item in SETTINGS:
        raw = params.get(item.name)
        if raw is None or raw == ():
            continue
        if item.multiple:
            raw = list(raw)
        found[item.name] = (raw, origin.format(flag=item.flags[-1]))
    app = params.get("app")
    if app:
        found["wsgi_app"] = (app, app_origin)
    return found


def parse(args: Sequence[str], where: str) -> dict[str, tuple[Any, str]]:
    """Parse `args` as the command line would be, without running anything.

    Raises:
        ConfigError: an unknown flag or a missing value; the message starts with `where`.
    """
    command = make_command(lambda **_: None, add_help_option=False)
    try:
        with command.make_context("arbiter", list(args)) as ctx:
            return values(ctx.params, f"{where} ({{flag}})", f"{where} (APP)")
    except click.ClickException as exc:
        raise ConfigError(f"{where}: {exc.format_message()}") from None


def parse_env(text: str, variable: str) -> dict[str, tuple[Any, str]]:
    """`$GUNICORN_CMD_ARGS`, split as a shell would (Gunicorn uses shlex too)."""
    where = f"environment variable {variable}"
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return parse(args, where)
