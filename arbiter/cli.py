"""The `arbiter` command. Its options are generated from the settings table, so a flag, its
config-file key and its environment variable can never drift apart.

This is the only module that prints errors and exits; everything below it raises.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from arbiter import __version__, logs
from arbiter.config import loader as config_mod
from arbiter.config.settings import SETTINGS, Setting
from arbiter.errors import AppLoadError, ArbiterError, ConfigError
from arbiter.web import app as app_loader
from arbiter.web import workers


def _option(setting: Setting) -> Any:
    kwargs: dict[str, Any] = {"help": setting.help, "default": None, "show_default": False}
    if setting.is_flag:
        kwargs.update(is_flag=True, default=None)
    elif setting.multiple:
        kwargs.update(multiple=True, default=(), metavar=setting.metavar)
    else:
        kwargs.update(metavar=setting.metavar)
    if setting.default not in (None, (), False) and not setting.is_flag:
        shown = ",".join(setting.default) if isinstance(setting.default, tuple) else setting.default
        kwargs["help"] += f"  [default: {shown}]"
    return click.option(*setting.flags, setting.name, **kwargs)


def _cli_values(params: dict[str, Any]) -> dict[str, config_mod.Value]:
    """What was typed, keyed by setting, with the flag as its origin for error messages."""
    values: dict[str, config_mod.Value] = {}
    for setting in SETTINGS:
        raw = params.get(setting.name)
        if raw is None or raw == ():
            continue
        if setting.multiple:
            raw = list(raw)
        values[setting.name] = config_mod.Value(raw, f"option {setting.flags[-1]}")
    app = params.get("app")
    if app:
        values["wsgi_app"] = config_mod.Value(app, "APP argument")
    return values


def _serve(params: dict[str, Any]) -> int:
    cli_values = _cli_values(params)
    cfg = config_mod.build(cli_values)
    if cfg.print_config:
        click.echo(cfg.as_text())
        return 0
    if not cfg.wsgi_app and not cfg.programs:
        raise ConfigError("nothing to run: pass APP (module:attribute), or set `wsgi_app` or [programs] in a config file")
    if cfg.umask is not None:  # unset: keep the umask Arbiter was started with; before any file
        os.umask(cfg.umask)
    try:
        logs.setup(cfg)
    except OSError as exc:
        raise ConfigError(f"cannot open log file {exc.filename}: {exc.strerror}") from None
    start_cwd = os.getcwd()
    app_loader.prepare_path(cfg.chdir, cfg.pythonpath)
    if cfg.check_config:
        if cfg.wsgi_app:
            workers.check(cfg.worker_class, threads=cfg.threads, preload=cfg.preload_app)
            app_loader.load(cfg.wsgi_app)
        click.echo(f"{cfg.config or 'configuration'}: OK" + (f"; {cfg.wsgi_app} imports" if cfg.wsgi_app else ""))
        return 0

    from setproctitle import setproctitle

    if cfg.daemon:
        from arbiter.master.daemon import daemonize

        daemonize()

    from arbiter.control.master_backend import attach_control
    from arbiter.master.loop import Master

    setproctitle(f"arbiter: master [{cfg.title_name}]")
    master = Master(cfg, reload_config=lambda: config_mod.build(cli_values), start_cwd=start_cwd)
    attach_control(master)
    return master.run()


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Run APP (module:attribute, module:factory() or module) with pre-forked web workers.\n\n"
    "Operate a running master with `arbiter ctl`.",
)
@click.argument("app", required=False)
@click.version_option(__version__, "-v", "--version", prog_name="arbiter")
def serve_command(**params: Any) -> None:
    try:
        code = _serve(params)
    except AppLoadError as exc:
        if exc.details:
            click.echo(exc.details.rstrip(), err=True)
        click.echo(f"Error: {exc}", err=True)
        code = exc.exit_code
    except ArbiterError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = exc.exit_code
    sys.exit(code)


for _setting in reversed(SETTINGS):
    if _setting.flags:
        serve_command = _option(_setting)(serve_command)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from arbiter.ctl import cli as ctl

        sys.exit(ctl.main(args[1:]))
    if args[:1] == ["fleet"]:
        from arbiter.fleet import cli as fleet

        sys.exit(fleet.main(args[1:]))
    serve_command.main(args=args, prog_name="arbiter")
