"""The `arbiter` command. Its options are generated from the settings table, so a flag, its
config-file key and its environment variable can never drift apart.

This is the only module that prints errors and exits; everything below it raises.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from arbiter import __version__, logs
from arbiter.config import flags
from arbiter.config import loader as config_mod
from arbiter.errors import AppLoadError, ArbiterError, ConfigError
from arbiter.web import app as app_loader
from arbiter.web import workers


def _cli_values(params: dict[str, Any]) -> dict[str, config_mod.Value]:
    """What was typed, keyed by setting, with the flag as its origin for error messages."""
    return {name: config_mod.Value(raw, origin) for name, (raw, origin) in flags.values(params).items()}


def _serve(params: dict[str, Any]) -> int:
    cli_values = _cli_values(params)
    start_cwd = os.getcwd()
    cfg = config_mod.build(cli_values, cwd=start_cwd)
    if cfg.print_config:
        click.echo(cfg.as_text())
        return 0
    if not cfg.wsgi_app and not cfg.programs:
        raise ConfigError("nothing to run: pass APP (module:attribute), or set `wsgi_app` or [programs] in a "
                          "config file")
    if cfg.umask is not None:  # unset: keep the umask Arbiter was started with; before any file
        os.umask(cfg.umask)
    try:
        logs.setup(cfg)
    except OSError as exc:
        raise ConfigError(f"cannot open log file {exc.filename}: {exc.strerror}") from None
    if cfg.is_ssl:
        from arbiter.web import tls

        tls.server_context(cfg)  # a bad certificate, cipher or CA file stops the start here
    app_loader.prepare_path(cfg.chdir, cfg.pythonpath)
    if cfg.check_config:
        if cfg.wsgi_app:
            workers.check(cfg.worker_class, threads=cfg.threads, preload=cfg.preload_app)
            app_loader.load(cfg.wsgi_app, cfg.raw_paste_global_conf)
        messages = config_mod.startup_messages(cfg)
        for level, message in messages:
            click.echo(f"{logging.getLevelName(level)}: {message}", err=True)
        count = sum(level >= logging.WARNING for level, _ in messages)
        click.echo(f"{cfg.config or 'configuration'}: OK" + (f"; {cfg.wsgi_app} imports" if cfg.wsgi_app else "")
                   + (f" ({count} warning{'s' if count > 1 else ''})" if count else ""))
        return 0

    from setproctitle import setproctitle

    if cfg.daemon:
        from arbiter.master.daemon import daemonize

        daemonize(keep_stdio=cfg.enable_stdio_inheritance)
        logs.reopen()  # --capture-output: fds 1 and 2 back on the error log file

    from arbiter.control.master_backend import attach_control
    from arbiter.master.loop import Master

    setproctitle(f"arbiter: master [{cfg.title_name}]")
    master = Master(cfg, reload_config=lambda: config_mod.build(cli_values, cwd=start_cwd),
                    start_cwd=start_cwd)
    attach_control(master)
    if cfg.statsd_host:
        from arbiter.statsd import WorkerGauge

        master.attach(WorkerGauge(master))
    return master.run()


def _run(**params: Any) -> None:
    # Serving starts without the cyclic collector, until Master.run freezes what start-up built
    # and switches it back on: see arbiter/__main__.py.
    gc.disable()
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
    finally:
        gc.enable()
    sys.exit(code)


serve_command = click.version_option(__version__, "-v", "--version", prog_name="arbiter")(flags.make_command(
    _run,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Run APP (module:attribute, module:factory() or module) with pre-forked web workers.\n\n"
    "Operate a running master with `arbiter ctl`.",
))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from arbiter.ctl import cli as ctl

        sys.exit(ctl.main(args[1:]))
    if args[:1] == ["fleet"]:
        from arbiter.fleet import cli as fleet

        sys.exit(fleet.main(args[1:]))
    serve_command.main(args=args, prog_name="arbiter")
