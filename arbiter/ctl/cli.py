"""`arbiter ctl`: control a running master over its control socket, as supervisorctl does.

Commands, output and exit statuses follow supervisorctl (`status` exits 3 when a named process
is stopped and 4 when a name is unknown or no server answers; `start` exits 7 on a spawn
error...), plus `scale` and `reload --wait`. `--json` prints the server's answers for scripts.
With no command: an interactive shell. `main(argv)` is the entry point; it returns the status.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import click

from arbiter.control.names import matching
from arbiter.control.records import STOPPED_STATES, Status
from arbiter.ctl.actions import Ctl, act, known, programs_of, result_spec
from arbiter.ctl.client import (
    EXIT_GENERIC,
    EXIT_NOT_RUNNING,
    EXIT_STATUS_NOT_RUNNING,
    EXIT_STATUS_UNKNOWN,
    ApiError,
    ControlClient,
    Unreachable,
    quote_name,
    resolve_socket,
)
from arbiter.ctl.tables import status_lines, workers_table
from arbiter.errors import ArbiterError

PASSTHROUGH = {"ignore_unknown_options": True}  # so that "-100" and "-1" reach the command


pass_ctl = click.make_pass_decorator(Ctl)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-s", "--socket", "socket_path", metavar="PATH",
              help="Control socket. Else: where -c's config puts it, else $ARBITER_SOCKET, else the master's "
              "default ($ARBITER_CONTROL_SOCKET, beside $ARBITER_PIDFILE, or ./arbiter.sock).")
@click.option("--url", metavar="http://HOST:PORT",
              help="Control server over TCP instead of the socket (http://NAME:SECRET@HOST:PORT for a "
              "supervisord.conf's [inet_http_server] username and password).")
@click.option("--token", envvar="ARBITER_TOKEN", help="Bearer token for --url (or $ARBITER_TOKEN).")
@click.option("-c", "--config", "config", metavar="FILE",
              help="The master's config file (.toml, .py, supervisord.conf): find its socket as the master does.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answers as JSON.")
@click.pass_context
def ctl(ctx: click.Context, socket_path: str | None, url: str | None, token: str | None,
        config: str | None, as_json: bool) -> None:
    """Control a running arbiter master."""
    state = ctx.ensure_object(Ctl)
    state.json = as_json
    if url:
        state.client = ControlClient(url=url, token=token)
    else:
        state.client = ControlClient(socket_path=resolve_socket(socket_path, config), token=token)
    if ctx.invoked_subcommand is None:
        from arbiter.ctl.shell import Shell

        def names() -> list[str]:
            return [p.namespec for p in Status.from_json(state.api().call("GET", "/v1/status", timeout=5)).programs]

        Shell(lambda args: main([*state.global_args, *args]), sorted(ctl.commands), names).cmdloop()


@ctl.command()
@click.argument("names", nargs=-1)
@pass_ctl
def status(c: Ctl, names: tuple[str, ...]) -> None:
    """Status of processes: NAME, GROUP:*, or all (exit 3: one is stopped, 4: unknown name)."""
    try:
        raw = c.api().call("GET", "/v1/status")
    except Unreachable as exc:
        click.echo(f"error: {exc}", err=True)
        c.fail(EXIT_STATUS_UNKNOWN)
        return
    st = Status.from_json(raw)
    chosen = list(st.programs)
    if names and "all" not in names:
        chosen = []
        for name in names:
            found = matching(st.programs, name)
            if not found:
                kind = "group" if name.endswith(":*") or name.endswith(":") else "process"
                click.echo(f"{name}: ERROR (no such {kind})")
                c.fail(EXIT_STATUS_UNKNOWN)
            chosen += [p for p in found if p not in chosen]
    if c.json:
        rows = [p.to_json() for p in chosen]
        c.show({**raw, "programs": rows} if not names else rows)
    else:
        if not names:
            workers_table(st)
        status_lines(chosen)
    if any(p.state in STOPPED_STATES for p in chosen):
        c.fail(EXIT_STATUS_NOT_RUNNING)


@ctl.command()
@click.argument("names", nargs=-1)
@pass_ctl
def start(c: Ctl, names: tuple[str, ...]) -> None:
    """Start processes (NAME, GROUP:*, all) and wait until they run."""
    act(c, "start", names, "started", {"ALREADY_STARTED"}, {"wait": True})


@ctl.command()
@click.argument("names", nargs=-1)
@pass_ctl
def stop(c: Ctl, names: tuple[str, ...]) -> None:
    """Stop processes (NAME, GROUP:*, all) and wait until they are stopped."""
    act(c, "stop", names, "stopped", {"NOT_RUNNING"}, {"wait": True})


@ctl.command()
@click.argument("names", nargs=-1)
@pass_ctl
def restart(c: Ctl, names: tuple[str, ...]) -> None:
    """Restart processes (NAME, GROUP:*, all)."""
    act(c, "restart", names, "restarted", {"NOT_RUNNING", "ALREADY_STARTED"}, {"wait": True})


@ctl.command()
@click.argument("sig")
@click.argument("names", nargs=-1)
@pass_ctl
def signal(c: Ctl, sig: str, names: tuple[str, ...]) -> None:
    """Send signal SIG (HUP, TERM, 15...) to processes."""
    act(c, "signal", names, "signalled", set(), {"signal": sig})


def _parse_tail(args: tuple[str, ...]) -> tuple[int, list[str]]:
    size, rest = 1600, []
    for arg in args:
        if arg.startswith("-") and arg[1:].isdigit():
            size = int(arg[1:])
        elif arg.startswith("-"):
            raise click.UsageError(f"bad argument {arg}")
        else:
            rest.append(arg)
    return size, rest


def _print_log(c: Ctl, path: str, size: int, follow: bool, label: str) -> None:
    out = sys.stdout.buffer
    try:
        if follow:
            for chunk in c.api().stream(f"{path}?follow=1&offset=-{size}"):
                out.write(chunk)
                out.flush()
            return
        code, _, data = c.api().request("GET", f"{path}?offset=-{size}")
        if code >= 400:
            error = json.loads(data).get("error", {})
            raise ApiError(error.get("code", ""), error.get("message", ""), code)
        out.write(data)
        out.flush()
    except ApiError as exc:
        reason = {"BAD_NAME": "no such process name", "NO_FILE": "no log file"}.get(exc.code, exc.message)
        click.echo(f"{label}: ERROR ({reason})")
        c.fail(EXIT_GENERIC)
    except KeyboardInterrupt:
        click.echo("")


@ctl.command(context_settings=PASSTHROUGH)
@click.option("-f", "follow", is_flag=True, help="Keep printing what is appended (Ctrl-C to stop).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_ctl
def tail(c: Ctl, follow: bool, args: tuple[str, ...]) -> None:
    """tail [-f] [-BYTES] NAME [stdout|stderr]: the end of a process's log (1600 bytes)."""
    size, rest = _parse_tail(args)
    if not rest or len(rest) > 2 or (len(rest) == 2 and rest[1] not in ("stdout", "stderr")):
        click.echo("Error: tail [-f] [-BYTES] NAME [stdout|stderr]")
        c.fail(EXIT_GENERIC)
        return
    stream = rest[1] if len(rest) == 2 else "stdout"
    _print_log(c, f"/v1/logs/{quote_name(rest[0])}/{stream}", size, follow, rest[0])


@ctl.command(context_settings=PASSTHROUGH)
@click.option("-f", "follow", is_flag=True, help="Keep printing what is appended (Ctrl-C to stop).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_ctl
def maintail(c: Ctl, follow: bool, args: tuple[str, ...]) -> None:
    """maintail [-f] [-BYTES]: the end of the master's own log."""
    size, rest = _parse_tail(args)
    _print_log(c, "/v1/logs/master", size, follow, "master")


@ctl.command()
@click.argument("names", nargs=-1, required=True)
@pass_ctl
def clear(c: Ctl, names: tuple[str, ...]) -> None:
    """Clear the logs of processes (NAME, GROUP:*, all)."""
    for name in known(c, names, EXIT_GENERIC):
        try:
            results = c.api().call("POST", f"/v1/logs/{quote_name(name)}/clear", {})
        except ApiError as exc:
            click.echo(f"{name}: ERROR ({exc.message})")
            c.fail(EXIT_GENERIC)
            continue
        for r in results:
            click.echo(f"{result_spec(r)}: cleared" if r["status"] == "OK" else f"{result_spec(r)}: ERROR (failed)")


@ctl.command()
@click.argument("names", nargs=-1)
@pass_ctl
def pid(c: Ctl, names: tuple[str, ...]) -> None:
    """The master's pid, or those of processes (NAME... or all)."""
    st = Status.from_json(c.api().call("GET", "/v1/status"))
    if not names:
        click.echo(str(st.master.pid))
        return
    for name in names:
        found = list(st.programs) if name == "all" else [p for p in st.programs if p.namespec == name or p.name == name]
        if not found:
            click.echo(f"No such process {name}")
            c.fail(EXIT_GENERIC)
        for p in found:
            click.echo(str(p.pid))
            if not p.pid and name != "all":
                c.fail(EXIT_NOT_RUNNING)


def _simple(c: Ctl, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return c.api().call("POST", path, body or {}, timeout=None)
    except ApiError as exc:
        click.echo(f"ERROR: {exc.message} ({exc.code})")
        raise click.exceptions.Exit(EXIT_GENERIC) from None


@ctl.command()
@pass_ctl
def reread(c: Ctl) -> None:
    """Read the configuration again and show what changed (nothing is applied)."""
    result = _simple(c, "/v1/reread")
    if c.json:
        return c.show(result)
    shown = (("added", "available"), ("changed", "changed"), ("removed", "disappeared"))
    lines = [f"{n}: {what}" for key, what in shown
             for n in result.get(key, [])]
    click.echo("\n".join(lines) if lines else "No config updates to processes")


@ctl.command()
@click.argument("names", nargs=-1)
@pass_ctl
def update(c: Ctl, names: tuple[str, ...]) -> None:
    """Apply the configuration: add, change and remove groups (NAME... or all)."""
    result = _simple(c, "/v1/update", {"names": [n for n in names if n != "all"]})
    if c.json:
        return c.show(result)
    result = result if isinstance(result, dict) else {}
    for key, what in (("removed", "removed process group"), ("changed", "updated process group"),
                      ("added", "added process group")):
        for name in result.get(key, []):
            click.echo(f"{name}: {what}")


@ctl.command()
@pass_ctl
def avail(c: Ctl) -> None:
    """Processes in use, and groups the configuration has that are not added yet."""
    programs = programs_of(c)
    added = _simple(c, "/v1/reread").get("added", [])
    if c.json:
        return c.show({"in_use": [p.namespec for p in programs], "available": added})
    for p in programs:  # supervisorctl's layout: name, in use, auto/manual, group:process priority
        click.echo(f"{p.namespec:<32} {'in use':<9} {'auto' if p.autostart else 'manual':<9} {p.priority}:{p.priority}")
    for name in added:
        click.echo(f"{name:<32} avail")


@ctl.command()
@click.argument("names", nargs=-1, required=True)
@pass_ctl
def add(c: Ctl, names: tuple[str, ...]) -> None:
    """Start using configured groups (after reread)."""
    _groups(c, "add", names, "added process group",
            {"ALREADY_ADDED": "process group already active", "BAD_NAME": "no such process/group"})


@ctl.command()
@click.argument("names", nargs=-1, required=True)
@pass_ctl
def remove(c: Ctl, names: tuple[str, ...]) -> None:
    """Stop using groups (their processes must be stopped)."""
    _groups(c, "remove", names, "removed process group",
            {"STILL_RUNNING": "process/group still running", "BAD_NAME": "no such process/group"})


def _groups(c: Ctl, action: str, names: tuple[str, ...], done: str, reasons: dict[str, str]) -> None:
    for name in names:
        try:
            c.api().call("POST", f"/v1/{action}", {"names": [name]})
            click.echo(f"{name}: {done}")
        except ApiError as exc:
            click.echo(f"ERROR: {reasons.get(exc.code, exc.message)}: {name}")
            c.fail(EXIT_GENERIC)


@ctl.command()
@click.option("--wait", is_flag=True, help="Wait for the end of the reload, showing progress; fail if it fails.")
@pass_ctl
def reload(c: Ctl, wait: bool) -> None:
    """Rolling reload of the web workers (as HUP)."""
    if not wait:
        result = _simple(c, "/v1/reload", {"wait": False})
        return c.show(result) if c.json else click.echo("reload started")
    answer: dict[str, Any] = {}

    def waiter() -> None:  # the wait runs in a thread so this one can show progress meanwhile
        try:
            answer["result"] = c.api().call("POST", "/v1/reload", {"wait": True}, timeout=None)
        except (ApiError, Unreachable) as exc:
            answer["error"] = exc

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    shown = None
    while thread.is_alive():
        thread.join(0.5)
        if thread.is_alive() and not c.json:
            try:
                st = Status.from_json(c.api().call("GET", "/v1/status", timeout=5))
            except (ApiError, Unreachable):
                continue
            line = (f"reload: {st.master.reload.state}; generation {st.master.generation}; "
                    f"{sum(w.state == 'READY' for w in st.workers)}/{st.master.workers_target} workers ready")
            if line != shown:
                click.echo(line)
                shown = line
    if isinstance(answer.get("error"), Unreachable):
        raise answer["error"]  # no master: the same exit status and hint as every command
    if "error" in answer:
        click.echo(f"reload failed: {answer['error']}")
        c.fail(EXIT_GENERIC)
    elif c.json:
        c.show(answer.get("result"))
    else:
        click.echo("reload done")


@ctl.command(context_settings=PASSTHROUGH)
@click.argument("spec", type=click.UNPROCESSED)
@pass_ctl
def scale(c: Ctl, spec: str) -> None:
    """Change the number of web workers: +N, -N or =N."""
    result = _simple(c, "/v1/scale", {"spec": spec})
    if c.json:
        return c.show(result)
    target = result.get("workers_target") if isinstance(result, dict) else None
    click.echo(f"workers target: {target}" if target is not None else "scale requested")


@ctl.command()
@pass_ctl
def refork(c: Ctl) -> None:
    """Promote a serving web worker to the mold now (see docs/reforking.md)."""
    result = _simple(c, "/v1/refork")
    c.show(result) if c.json else click.echo("refork requested: a worker is being promoted to the mold")


@ctl.command()
@pass_ctl
def shutdown(c: Ctl) -> None:
    """Stop every process and the master."""
    result = _simple(c, "/v1/shutdown")
    c.show(result) if c.json else click.echo("Shut down")


@ctl.command()
@pass_ctl
def version(c: Ctl) -> None:
    """The master's version."""
    click.echo(Status.from_json(c.api().call("GET", "/v1/status")).master.version)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Ctl).json = True


# `--json` after the command too (`arbiter ctl status --json`), for every command.
for _command in ctl.commands.values():
    _command.params.append(click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_set_json, help="Print the server's answers as JSON."))


def main(argv: list[str] | None = None) -> int:
    """Run `arbiter ctl` with `argv` (default: sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    state = Ctl(global_args=_global_args(args))
    try:
        # Without standalone mode click returns the status of a `click.exceptions.Exit`.
        returned = ctl.main(args=args, prog_name="arbiter ctl", obj=state, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return EXIT_GENERIC
    except ArbiterError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    if isinstance(returned, int) and not isinstance(returned, bool) and returned:
        return returned
    return state.status


def _global_args(args: list[str]) -> list[str]:
    """The options before the command, so the shell can run each line with them."""
    out, i = [], 0
    while i < len(args) and args[i].startswith("-"):
        out.append(args[i])
        if args[i] in ("-s", "--socket", "--url", "--token", "-c", "--config") and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out


if __name__ == "__main__":
    sys.exit(main())
