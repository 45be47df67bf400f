"""`arbiter fleet ...`: serve the fleet server, manage its accounts and tokens, run a deploy.

    arbiter fleet -c fleet.toml [--bind 127.0.0.1:9190] [--db fleet.db]
    arbiter fleet user add NAME --role admin|operator|viewer [--password-stdin]
    arbiter fleet user passwd NAME | user remove NAME | user list
    arbiter fleet token add USER [--label TEXT] | token remove USER
    arbiter fleet reload ENV [--batch N] [--url URL] [--token-file FILE]

The server is an Arbiter master running the fleet app in one uvicorn worker (dogfood): this
command checks the config and the accounts, then replaces itself with that master.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from arbiter.errors import ArbiterError, ConfigError
from arbiter.fleet import config as config_mod
from arbiter.fleet.errors import FleetError
from arbiter.fleet.store import ROLES, Store

DEFAULT_BIND = "127.0.0.1:9190"  # 9100 is node_exporter's
TOKEN_ENV = "FLEET_TOKEN"
CESI_DEFAULT_ADMIN = ("admin", "admin")


def _store(config_path: str | None, db: str | None) -> tuple[config_mod.FleetConfig | None, Store]:
    """The store named by the subcommand's -c/--db, else by the group's (`arbiter fleet -c X user ...`)."""
    outer = click.get_current_context().find_root().params
    config_path = config_path or outer.get("config_path") or "fleet.toml"
    db = db or outer.get("db")
    cfg = config_mod.load(config_path) if (db is None or os.path.exists(config_path)) else None
    return cfg, Store(db or (cfg.database if cfg else "fleet.db"))


def _password(stdin: bool, prompt: str = "Password") -> str:
    from arbiter.fleet.auth import hash_password

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"{prompt}: ")
        if getpass.getpass("Again: ") != password:
            raise FleetError("BAD_ARGUMENTS", "the passwords differ")
    return hash_password(password)


def bootstrap_cesi_admin(cfg: config_mod.FleetConfig, store: Store) -> str | None:
    """Cesi's admin_username/admin_password make the first admin when there is no account yet.

    Raises:
        ConfigError: for Cesi's default admin/admin, which would be a known password.
    """
    if not cfg.cesi or store.has_accounts() or not cfg.admin_username:
        return None
    if (cfg.admin_username, cfg.admin_password) == CESI_DEFAULT_ADMIN:
        raise ConfigError(f"{cfg.path}: [cesi] admin_username/admin_password are Cesi's default admin/admin; "
                          "refusing to make an account everyone knows the password of. Change admin_password, "
                          "or remove both and run `arbiter fleet user add NAME --role admin`")
    from arbiter.fleet.auth import hash_password

    store.add_account(cfg.admin_username, "admin", hash_password(cfg.admin_password or ""))
    return cfg.admin_username


option_config = click.option("-c", "--config", "config_path", metavar="FILE",
                             help="fleet.toml, or Cesi's cesi.conf.toml (default: ./fleet.toml).")
option_db = click.option("--db", metavar="FILE", help="The SQLite file (default: the config's, or fleet.db beside it).")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]},
             help="The fleet server: one page and one API over many Arbiter and supervisord hosts.\n\n"
             "Without a command, serve it (an Arbiter master with one uvicorn worker).")
@option_config
@option_db
@click.option("-b", "--bind", default=DEFAULT_BIND, show_default=True, metavar="HOST:PORT",
              help="Where the fleet server listens.")
@click.pass_context
def fleet(ctx: click.Context, config_path: str | None, db: str | None, bind: str) -> None:
    if ctx.invoked_subcommand is not None:
        return
    config_path = config_path or "fleet.toml"
    cfg = config_mod.load(config_path)
    store = Store(db or cfg.database)
    made = bootstrap_cesi_admin(cfg, store)
    if made:
        click.echo(f"Made the first admin account {made!r} from {cfg.path}'s [cesi] section.")
    if not store.has_accounts():
        store.close()
        raise FleetError("NO_ACCOUNT", f"no account yet, so nothing is served. Make the first one with:\n\n"
                         f"    arbiter fleet -c {config_path} user add NAME --role admin\n\n"
                         "then start the fleet server again.")
    store.close()
    try:
        import httpx  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the fleet server needs {exc.name}: pip install 'arbiter[fleet]'") from None
    env = dict(os.environ, FLEET_CONFIG=cfg.path, FLEET_DB=os.path.abspath(db or cfg.database))
    args = [sys.executable, "-m", "arbiter", "arbiter.fleet.asgi:create_app()", "--bind", bind,
            "--workers", "1", "--worker-class", "uvicorn", "--name", "fleet", "--graceful-timeout", "10",
            "--control-socket", "none"]
    # One worker: the app keeps running deploys as tasks and the login rate limit in memory, and
    # one asyncio worker waits on a hundred nodes without effort.
    sys.stdout.flush()
    os.execve(sys.executable, args, env)


@fleet.group(help="Accounts: admin (accounts), operator (actions), viewer (read only).")
def user() -> None:
    pass


@user.command("add", help="Make an account (the password is prompted for, or read with --password-stdin).")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@option_config
@option_db
def user_add(name: str, role: str, password_stdin: bool, config_path: str | None, db: str | None) -> None:
    _, store = _store(config_path, db)
    store.add_account(name, role, _password(password_stdin))
    click.echo(f"account {name} ({role}) added")


@user.command("passwd", help="Change an account's password; its sessions end.")
@click.argument("name")
@click.option("--password-stdin", is_flag=True)
@option_config
@option_db
def user_passwd(name: str, password_stdin: bool, config_path: str | None, db: str | None) -> None:
    _, store = _store(config_path, db)
    if not store.account(name):
        raise FleetError("BAD_NAME", f"no account {name!r}")
    store.set_password(name, _password(password_stdin, "New password"))
    click.echo(f"password of {name} changed; its sessions ended")


@user.command("remove", help="Remove an account, its tokens and its sessions.")
@click.argument("name")
@option_config
@option_db
def user_remove(name: str, config_path: str | None, db: str | None) -> None:
    _, store = _store(config_path, db)
    store.remove_account(name)
    click.echo(f"account {name} removed, with its tokens and sessions")


@user.command("list", help="List the accounts, their roles and token counts.")
@option_config
@option_db
def user_list(config_path: str | None, db: str | None) -> None:
    _, store = _store(config_path, db)
    for account in store.accounts():
        click.echo(f"{account['name']:<24} {account['role']:<9} {account['tokens']} token(s)")


@fleet.group(help="API tokens for scripts: `Authorization: Bearer TOKEN`, with the account's role.")
def token() -> None:
    pass


@token.command("add", help="Print a new API token for USER (shown once; only its hash is kept).")
@click.argument("user_name", metavar="USER")
@click.option("--label", default="", help="What the token is for.")
@option_config
@option_db
def token_add(user_name: str, label: str, config_path: str | None, db: str | None) -> None:
    _, store = _store(config_path, db)
    click.echo(store.add_token(user_name, label))


@token.command("remove", help="Revoke every API token of USER.")
@click.argument("user_name", metavar="USER")
@option_config
@option_db
def token_remove(user_name: str, config_path: str | None, db: str | None) -> None:
    _, store = _store(config_path, db)
    click.echo(f"{store.remove_tokens(user_name)} token(s) of {user_name} removed")


@fleet.command("reload", help="Rolling deploy of environment ENV through the fleet server; follows it to the end.")
@click.argument("environment")
@click.option("--batch", default=1, show_default=True, help="Nodes reloaded at once.")
@click.option("--url", default=f"http://{DEFAULT_BIND}", show_default=True, help="The fleet server.")
@click.option("--token-file", metavar="FILE", help=f"An API token (else ${TOKEN_ENV}).")
def reload(environment: str, batch: int, url: str, token_file: str | None) -> None:
    import httpx

    secret = os.environ.get(TOKEN_ENV, "")
    if token_file:
        with open(token_file) as handle:
            secret = handle.read().strip()
    if not secret:
        raise ConfigError(f"give an API token: --token-file FILE or ${TOKEN_ENV} (arbiter fleet token add USER)")
    with httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {secret}"}, timeout=30,
                      trust_env=False) as client:
        response = client.post(f"/api/v1/environments/{environment}/reload", json={"batch": batch})
        if response.status_code != 202:
            raise FleetError(_code(response), _message(response))
        deploy_id, shown = response.json()["id"], dict[str, str]()
        click.echo(f"deploy {deploy_id} of {environment}")
        while True:
            record = client.get(f"/api/v1/deploys/{deploy_id}").json()
            for node in record["nodes"]:
                line = f"  {node['node']}: {node['state']}" + (f" ({node['error']})" if node.get("error") else "")
                if shown.get(node["node"]) != line:
                    shown[node["node"]] = line
                    click.echo(line)
            if record["state"] != "running":
                break
            time.sleep(0.5)
    click.echo(f"deploy {deploy_id}: {record['state']}" + (f": {record['error']}" if record["error"] else ""))
    if record["state"] != "done":
        raise FleetError("RELOAD_FAILED", f"deploy {deploy_id} {record['state']}")


def _code(response: Any) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "FAILED"


def _message(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def main(argv: Sequence[str]) -> int:
    try:
        fleet.main(args=list(argv), prog_name="arbiter fleet", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 1
    except ArbiterError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    return 0
