"""Every flag of Gunicorn 27's own `--help` is taken by Arbiter with Gunicorn's meaning, or
ignored with a logged reason, or refused with a message; docs/gunicorn.md lists them all."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_arbiter

from arbiter.config import gunicorn as table
from arbiter.config.settings import BY_NAME

gunicorn_config = pytest.importorskip("gunicorn.config")


def gunicorn_help_flags() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    flags: set[str] = set()
    for line in out.splitlines():
        if not re.match(r"^  -", line):
            continue  # a help text line, not an option
        for part in re.split(r",\s+", line.strip().split("  ")[0]):
            flags.add(part.split()[0])
    return flags


def test_gunicorn_is_27():
    import gunicorn

    assert gunicorn.__version__.startswith("27."), gunicorn.__version__


def test_every_flag_of_gunicorns_help_is_in_the_table():
    listed = {flag for flags, _ in table.GUNICORN for flag in flags}
    found = gunicorn_help_flags()
    assert len(found) > 100
    assert found - listed == set(), "Gunicorn flags Arbiter does not know of"
    assert listed - found == set(), "flags in the table Gunicorn does not have"


def test_every_gunicorn_setting_is_in_the_table_under_its_name():
    known = {item.name: tuple(item.cli or ()) for item in gunicorn_config.KNOWN_SETTINGS}
    known.pop("wsgi_app")  # the APP argument
    listed = {name: flags for flags, name in table.GUNICORN if name not in ("help", "version")}
    assert listed == known


def test_every_flag_is_accepted_by_arbiters_command_line():
    from arbiter.cli import serve_command

    accepted = {opt for param in serve_command.params for opt in (*param.opts, *param.secondary_opts)}
    accepted |= {"-h", "--help"}
    missing = [flag for flags, _ in table.GUNICORN for flag in flags if flag not in accepted]
    assert missing == []
    for flags, name in table.GUNICORN:
        if flags and name not in ("help", "version"):
            assert set(flags) <= set(BY_NAME[table.setting_for(name)].flags), name


def test_each_row_says_what_arbiter_does():
    rows = table.rows()
    assert {row.status for row in rows} <= {"same", "ignored", "refused"}
    by_name = {row.name: row for row in rows}
    assert by_name["worker_tmp_dir"].status == "ignored" and "heartbeat" in by_name["worker_tmp_dir"].what
    assert by_name["http2_cleartext"].status == "refused"
    assert by_name["dirty_workers"].status == "refused"
    assert "fixed list of methods" in by_name["permit_unconventional_http_method"].what
    assert by_name["control_socket"].status == "same"


# Where Arbiter's default is not Gunicorn's, and why (everything else must match).
DIFFERENT_DEFAULTS = {
    "config": "no -c: ./arbiter.toml, else ./gunicorn.conf.py, decided at start",
    "worker_class": "auto picks uvicorn for an ASGI app, sync for WSGI",
    "chdir": "None: the working directory, decided at start",
    "user": "None: the user Arbiter runs as",
    "group": "None: the group Arbiter runs as",
    "control_socket": "None: arbiter.sock beside the pidfile",
    "cert_reqs": "the same number; Gunicorn's default is ssl.CERT_NONE",
    "ssl_version": "named by its string; Gunicorn's default is ssl.PROTOCOL_TLS",
    "logconfig_dict": "the same empty dict",
    "syslog_addr": "the same; Gunicorn's default depends on the platform",
    "umask": "None: keep the umask Arbiter was started with (Gunicorn's 0 leaves files world-writable)",
}


def _normal(value):
    if isinstance(value, str) and "," in value:
        return tuple(item.strip() for item in value.split(","))
    if isinstance(value, list):
        return tuple(value)
    return value


def test_defaults_are_gunicorns():
    differ = []
    for item in gunicorn_config.KNOWN_SETTINGS:
        name = table.setting_for(item.name)
        if name is None or name in DIFFERENT_DEFAULTS or callable(item.default):
            continue
        ours = BY_NAME[name].default
        theirs = _normal(item.default)
        if ours != theirs and not (ours in ((), "") and theirs in (None, (), "")):
            differ.append((item.name, ours, theirs))
    assert differ == []


def test_an_ignored_flag_is_logged_once_at_start(arbiter):
    master = arbiter(["wsgi_app:application", "--worker-tmp-dir", "/dev/shm"])
    master.wait_ready(1)
    lines = re.findall(r"\[WARNING\] .*worker-tmp-dir.*", master.log())
    assert lines == ["[WARNING] option --worker-tmp-dir: --worker-tmp-dir is ignored: no heartbeat files here: "
                     "workers report to the master through a shared-memory scoreboard"]


@pytest.mark.parametrize("args, message", [
    (["--http-protocols", "h2,h1"], "option --http-protocols: --http-protocols is not supported: HTTP/2 is not "
                                    "served yet"),
    (["--dirty-workers", "2"], "--dirty-workers is not supported: the dirty worker pool is not offered yet"),
    (["--permit-unconventional-http-method"], "llhttp knows a fixed list of methods"),
])
def test_a_refused_flag_stops_the_start_with_a_message(args, message):
    result = run_arbiter(["wsgi_app:application", *args])
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_gunicorn_doc_is_generated_from_the_table():
    path = Path(__file__).resolve().parent.parent / "docs" / "gunicorn.md"
    assert path.read_text() == table.render(), "run: python3 -m arbiter.config.gunicorn > docs/gunicorn.md"


def test_secure_scheme_headers_within_gunicorns_defaults(tmp_path):
    from arbiter.config import loader
    from arbiter.errors import ConfigError

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("secure_scheme_headers = {'X-Forwarded-Proto': 'https'}\n")
    cfg = loader.build({"config": loader.Value(str(conf), "option --config")}, {})
    assert cfg.extras.warnings == (f"{conf}:1: 'secure_scheme_headers' is ignored: Gunicorn's three default scheme "
                                   "headers are always honoured from --forwarded-allow-ips peers",)
    conf.write_text("secure_scheme_headers = {'X-Scheme': 'https'}\n")
    with pytest.raises(ConfigError, match=r":1: 'secure_scheme_headers' must be some of Gunicorn's default"):
        loader.build({"config": loader.Value(str(conf), "option --config")}, {})
