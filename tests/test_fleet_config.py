"""fleet.toml and Cesi's cesi.conf.toml, the first start without accounts, and the account CLI."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from arbiter.errors import ConfigError
from arbiter.fleet import config as fleet_config
from fleet_helpers import PASSWORD, fleet_cli

CESI = textwrap.dedent('''
    [cesi]
    database = "sqlite:///users.db"
    activity_log = "activity.log"
    admin_username = "admin"
    admin_password = "admin"

    [[nodes]]
    name = "go-api"
    environment = ""
    username = "u"
    password = "p"
    host = "127.0.0.1"
    port = "9001"

    [[nodes]]
    name = "python-api"
    environment = "prod"
    username = ""
    password = ""
    host = "localhost"
    port = "9002"
''')


def test_cesi_config_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "cesi.conf.toml"
    path.write_text(CESI)
    cfg = fleet_config.load(str(path))
    assert cfg.cesi and cfg.database == str(tmp_path / "users.db")
    assert cfg.activity_log == str(tmp_path / "activity.log")
    assert [(n.name, n.kind, n.url, n.environment) for n in cfg.nodes] == [
        ("go-api", "supervisor", "http://127.0.0.1:9001", "default"),
        ("python-api", "supervisor", "http://localhost:9002", "prod")]
    assert "'p'" not in repr(cfg)  # secrets stay out of reprs (and so out of logs)


def test_cesi_default_admin_is_refused_and_a_real_one_is_made(tmp_path: Path) -> None:
    path = tmp_path / "cesi.conf.toml"
    path.write_text(CESI)
    result = fleet_cli(["-c", str(path)])
    assert result.returncode != 0 and "admin/admin" in result.stderr
    path.write_text(CESI.replace('admin_password = "admin"', 'admin_password = "a long passphrase"'))
    result = fleet_cli(["-c", str(path), "user", "list"])
    assert result.returncode == 0 and result.stdout == ""  # listing makes nothing
    from arbiter.fleet.cli import bootstrap_cesi_admin
    from arbiter.fleet.store import Store
    store = Store(str(tmp_path / "users.db"))
    assert bootstrap_cesi_admin(fleet_config.load(str(path)), store) == "admin"
    assert store.account("admin")["role"] == "admin"
    assert bootstrap_cesi_admin(fleet_config.load(str(path)), store) is None  # only when there is no account


@pytest.mark.parametrize("text, where, what", [
    ('deadline = 2\ncolour = "red"\n', "line 2", "unknown key 'colour'"),
    ('[[nodes]]\nname = "a"\nurl = "http://127.0.0.1:1"\nkind = "supervisor"\nhostname = "x"\n', "line 5",
     "unknown key 'hostname' in [[nodes]]"),
    ('[[nodes]]\nname = "a"\nurl = "http://127.0.0.1:1"\n', "line 2", "has no token_file"),
    ('[[nodes]]\nname = "a"\nurl = "ftp://x"\nkind = "supervisor"\n', "line 3", "expected http(s)://HOST:PORT"),
    ('deadline = "soon"\n', "line 1", "deadline in the top level must be a float"),
    ('[cesi]\ndatabase = "sqlite:///u.db"\nsecret_key = "x"\n', "line 3", "unknown key 'secret_key' in [cesi]"),
    ('[cesi]\n[[nodes]]\nname = "a"\nhost = "h"\nport = 1\nurl = "x"\n', "line 6", "unknown key 'url'"),
])
def test_unknown_and_wrong_keys_name_file_line_and_key(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        fleet_config.load(str(path))
    assert f"{path}, {where}" in str(info.value) and what in str(info.value)


def test_first_start_without_an_account_serves_nothing_and_says_how(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("deadline = 1.5\n")
    result = fleet_cli(["-c", str(path), "--bind", "127.0.0.1:0"], timeout=30)
    assert result.returncode != 0
    assert "user add NAME --role admin" in result.stderr and "nothing is served" in result.stderr
    assert (tmp_path / "fleet.db").stat().st_mode & 0o077 == 0  # the database is private


def test_account_commands(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("")
    assert fleet_cli(["-c", str(path), "user", "add", "root", "--role", "admin", "--password-stdin"],
                     input=PASSWORD + "\n").returncode == 0
    again = fleet_cli(["-c", str(path), "user", "add", "root", "--role", "viewer", "--password-stdin"], input="x" * 9)
    assert again.returncode != 0 and "already exists" in again.stderr
    short = fleet_cli(["-c", str(path), "user", "add", "bob", "--role", "viewer", "--password-stdin"], input="short\n")
    assert short.returncode != 0 and "at least 8" in short.stderr
    bad_role = fleet_cli(["-c", str(path), "user", "add", "bob", "--role", "god", "--password-stdin"], input="x" * 9)
    assert bad_role.returncode != 0
    token = fleet_cli(["-c", str(path), "token", "add", "root"]).stdout.strip()
    assert token.startswith("afl_")
    listed = fleet_cli(["-c", str(path), "user", "list"]).stdout
    assert "root" in listed and "admin" in listed and "1 token(s)" in listed
    assert fleet_cli(["-c", str(path), "user", "passwd", "root", "--password-stdin"],
                     input="another passphrase\n").returncode == 0
    raw = (tmp_path / "fleet.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("fleet.db-*"))
    assert PASSWORD.encode() not in raw and b"another passphrase" not in raw and token.encode() not in raw
    with sqlite3.connect(tmp_path / "fleet.db") as db:
        assert db.execute("SELECT password FROM accounts").fetchone()[0].startswith("scrypt$")
    assert fleet_cli(["-c", str(path), "user", "remove", "root"]).returncode == 0
    assert fleet_cli(["-c", str(path), "user", "list"]).stdout == ""
