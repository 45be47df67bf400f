"""Loading programs from supervisord.conf files as people write them, and from arbiter.toml."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from arbiter.errors import ConfigError
from arbiter.programs import load_supervisor_ini, programs_from_mapping
from arbiter.programs.config import ProcessSpec, ProgramConfig, check_programs
from arbiter.programs.states import Autorestart

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURES = Path(__file__).parent / "fixtures" / "supervisor"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    """A writable copy: paths in the files are relative to them (`%(here)s`)."""
    target = tmp_path / "supervisor"
    shutil.copytree(FIXTURES, target, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(target):
        os.chmod(folder, 0o755)
    return target


def processes(result: Any) -> dict[str, ProcessSpec]:
    group_of = {m: g for g, members in result.groups.items() for m in members}
    return {spec.fullname: spec for p in result.programs for spec in p.processes(group_of.get(p.name))}


def write_conf(tmp_path: Path, body: str, name: str = "test.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# ---- the fixtures -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_names_and_autostart(fixture_dir: Path, name: str) -> None:
    result = load_supervisor_ini(str(fixture_dir / name))
    specs = processes(result)
    expected = EXPECTED[name]
    assert sorted(specs) == sorted(expected["running"] + expected.get("stopped", []))
    for fullname in expected["running"]:
        assert specs[fullname].program.autostart
    for fullname in expected.get("stopped", []):
        assert not specs[fullname].program.autostart
    if name != "unsupported.conf":
        assert result.warnings == []


def test_unsupported_names_each_thing_in_one_warning(fixture_dir: Path) -> None:
    result = load_supervisor_ini(str(fixture_dir / "unsupported.conf"))
    for thing in EXPECTED["unsupported.conf"]["warnings_name"]:
        assert len([w for w in result.warnings if thing in w]) == 1, (thing, result.warnings)
    assert len(result.warnings) == 4
    assert any("unsupported.conf:5" in w and "made_up_option" in w for w in result.warnings)
    assert [p.name for p in result.programs] == ["fine"]  # the rest still runs


def test_minimal_include_is_relative_to_the_including_file(fixture_dir: Path) -> None:
    result = load_supervisor_ini(str(fixture_dir / "minimal.conf"))
    (ticker,) = result.programs
    (spec,) = ticker.processes()
    assert os.path.samefile(spec.directory, fixture_dir)  # %(here)s of conf.d/ticker.ini, then ..
    assert spec.argv == ("python3", "-u", "apps/ticker.py", "--name", "ticker")  # comment gone
    assert os.path.samefile(os.path.dirname(spec.stdout_logfile), fixture_dir / "run")
    assert ticker.redirect_stderr and spec.stderr_logfile is None
    assert ticker.autorestart is Autorestart.ALWAYS
    opts = result.options
    assert opts.logfile == f"{fixture_dir}/run/supervisord.log" and opts.nodaemon is True
    assert opts.logfile_maxbytes == 50 * 1024 * 1024 and opts.logfile_backups == 10
    assert opts.unix_http_server.file == f"{fixture_dir}/run/supervisor.sock"
    assert opts.unix_http_server.chmod == 0o700
    assert opts.serverurl == f"unix://{fixture_dir}/run/supervisor.sock"
    assert opts.childlogdir == f"{fixture_dir}/run" and opts.loglevel == "info"


def test_pool_expansions_and_environment(fixture_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/with,comma")  # an expanded value stays one value
    result = load_supervisor_ini(str(fixture_dir / "pool.conf"))
    specs = processes(result)
    assert result.groups == {"backend": ["spam", "worker"]}
    spam1, spam4 = specs["backend:spam_01"], specs["backend:spam_04"]
    assert spam1.argv[-1] == "--port=9301" and spam4.argv[-1] == "--port=9304"
    assert spam1.stdout_logfile == f"{fixture_dir}/run/spam_01.log"
    assert spam4.stderr_logfile == f"{fixture_dir}/run/spam_04.err"
    assert dict(spam1.environment) == {
        "PYTHONPATH": f"{fixture_dir}/apps", "APP_ENV": "production", "APP_LIST": "a,b,c",
        "APP_HOME": "/home/with,comma",
    }
    spam = spam1.program
    assert spam.stopsignal == signal.SIGQUIT and spam.stdout_logfile_maxbytes == 0
    assert (spam.numprocs, spam.numprocs_start) == (4, 1)
    worker = specs["backend:worker"].program
    assert worker.exitcodes == (0, 2) and worker.startsecs == 0 and worker.stopwaitsecs == 0
    assert worker.autorestart is Autorestart.UNEXPECTED


def test_options_every_key(fixture_dir: Path) -> None:
    result = load_supervisor_ini(str(fixture_dir / "options.conf"))
    every, off = result.programs
    (spec,) = every.processes()
    assert spec.argv == ("python3", "-u", f"{fixture_dir}/apps/ticker.py", "quoted arg", "--flag")
    assert dict(spec.environment) == {"APP_MODE": "test", "APP_QUOTED": "x y"}
    assert (every.umask, every.priority, every.autostart, every.startsecs, every.startretries) == (0o077, 10, True, 2, 5)
    assert every.stopsignal == signal.SIGINT and every.stopwaitsecs == 3
    assert every.stopasgroup and every.killasgroup and not every.redirect_stderr
    assert (every.stdout_logfile_maxbytes, every.stdout_logfile_backups) == (1024, 3)
    assert every.stderr_logfile == "AUTO" and every.stderr_logfile_maxbytes == 1024 * 1024
    assert every.stderr_logfile_backups == 0
    assert off.autostart is False and off.stdout_logfile is None
    opts = result.options
    assert (opts.umask, opts.minfds, opts.minprocs, opts.identifier) == (0o022, 1024, 200, "options-test")
    assert opts.unix_http_server.chmod == 0o770


# ---- Supervisor's value syntax ------------------------------------------------------------


PROGRAM = """\
[supervisord]
[program:x]
command=/bin/true
{extra}
"""


def load_program(tmp_path: Path, extra: str) -> ProgramConfig:
    result = load_supervisor_ini(str(write_conf(tmp_path, PROGRAM.format(extra=extra))))
    assert result.warnings == []
    return result.programs[0]


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("false", False), ("yes", True), ("no", False), ("on", True), ("off", False),
    ("1", True), ("0", False), ("TRUE", True), ("Off", False),
])
def test_boolean_spellings(tmp_path: Path, text: str, value: bool) -> None:
    assert load_program(tmp_path, f"autostart={text}").autostart is value


@pytest.mark.parametrize(("text", "value"), [("TERM", signal.SIGTERM), ("SIGHUP", signal.SIGHUP),
                                             ("int", signal.SIGINT), ("9", signal.SIGKILL)])
def test_signals_with_or_without_sig(tmp_path: Path, text: str, value: int) -> None:
    assert load_program(tmp_path, f"stopsignal={text}").stopsignal == value


@pytest.mark.parametrize(("text", "value"), [("100", 100), ("1KB", 1024), ("2mb", 2 << 20), ("1GB", 1 << 30)])
def test_byte_sizes(tmp_path: Path, text: str, value: int) -> None:
    assert load_program(tmp_path, f"stdout_logfile_maxbytes={text}").stdout_logfile_maxbytes == value


def test_inline_comments_need_whitespace(tmp_path: Path) -> None:
    program = load_program(tmp_path, "command=/bin/echo a;b # and a comment\npriority=5 ; five")
    assert program.processes()[0].argv == ("/bin/echo", "a;b") and program.priority == 5


def test_expansions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBITER_TEST_WHO", "world")
    conf = write_conf(tmp_path, """\
        [program:x]
        command=/bin/echo %(ENV_ARBITER_TEST_WHO)s %(group_name)s %(numprocs)d %(process_num)d 100%%
        process_name=%(program_name)s-%(process_num)d
        numprocs=2
        directory=%(here)s
        [group:g]
        programs=x
    """)
    specs = processes(load_supervisor_ini(str(conf)))
    assert specs["g:x-1"].argv == ("/bin/echo", "world", "g", "2", "1", "100%")
    assert specs["g:x-0"].directory == str(tmp_path)


def test_supervisord_environment_is_inherited(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, """\
        [supervisord]
        environment=SHARED=1,OVER=base
        [program:x]
        command=/bin/true
        environment=OVER=mine
    """)
    (program,) = load_supervisor_ini(str(conf)).programs
    assert dict(program.processes()[0].environment) == {"SHARED": "1", "OVER": "mine"}


def test_include_with_no_match_and_redirect_warnings(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, """\
        [include]
        files = nothing/*.ini
        [program:x]
        command=/bin/true
        redirect_stderr=true
        stderr_logfile=/tmp/x.err
        stdout_capture_maxbytes=0
        stdout_syslog=true
    """)
    warnings = load_supervisor_ini(str(conf)).warnings
    assert len(warnings) == 3
    assert "nothing/*.ini" in warnings[0]
    assert any("stderr_logfile" in w for w in warnings) and any("stdout_syslog" in w for w in warnings)


# ---- errors name file, line, section, key, value and what was expected ---------------------


@pytest.mark.parametrize(("line", "limit"), [("memory_limit=200MB", 200 << 20), ("memory_limit=150", 150 << 20),
                                           ("memory_limit=1GB", 1 << 30), ("", 0)])
def test_memory_limit_is_a_size_and_a_bare_number_is_mib(tmp_path: Path, line: str, limit: int) -> None:
    conf = write_conf(tmp_path, PROGRAM.format(extra=line))
    assert load_supervisor_ini(str(conf)).programs[0].memory_limit == limit


@pytest.mark.parametrize(("line", "key", "expected"), [
    ("startsecs=soon", "startsecs", "a number of seconds"),
    ("autostart=maybe", "autostart", "true or false"),
    ("autorestart=sometimes", "autorestart", "true, false or unexpected"),
    ("stopsignal=BOGUS", "stopsignal", "signal name"),
    ("stdout_logfile_maxbytes=50XB", "stdout_logfile_maxbytes", "byte size"),
    ("memory_limit=lots", "memory_limit", "a size such as 512MB"),
    ("exitcodes=0,300", "exitcodes", "between 0 and 255"),
    ("numprocs=0", "numprocs", "at least 1"),
    ("umask=999", "umask", "octal"),
    ("user=no-such-user-here", "user", "existing user"),
])
def test_bad_values_name_everything(tmp_path: Path, line: str, key: str, expected: str) -> None:
    conf = write_conf(tmp_path, PROGRAM.format(extra=line))
    with pytest.raises(ConfigError) as info:
        load_supervisor_ini(str(conf))
    message = str(info.value)
    value = line.partition("=")[2]
    assert f"{conf}:4" in message and "[program:x]" in message and key in message
    assert repr(value) in message and expected in message


@pytest.mark.parametrize(("extra", "needle"), [
    ("command=/bin/echo %(nope)s", "%(nope)"),
    ("numprocs=2", "%(process_num)"),
    ("stopasgroup=true\nkillasgroup=false", "killasgroup"),
    ("stdout_logfile=/no/such/dir/x.log", "/no/such/dir"),
    ("command=/bin/date +%s", "%%"),
    ("depends_on=ghost", "ghost"),
])
def test_inconsistent_programs_are_errors(tmp_path: Path, extra: str, needle: str) -> None:
    body = "[program:x]\n" + (extra if extra.startswith("command") else "command=/bin/true\n" + extra)
    with pytest.raises(ConfigError, match=".") as info:
        load_supervisor_ini(str(write_conf(tmp_path, body)))
    assert needle in str(info.value) and str(tmp_path) in str(info.value)


def test_group_naming_unknown_program(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "[program:web]\ncommand=/bin/true\n[group:g]\nprograms=web,wbe\n")
    with pytest.raises(ConfigError, match="unknown program 'wbe'"):
        load_supervisor_ini(str(conf))


def test_depends_on_cycle() -> None:
    a = ProgramConfig(name="a", command="/bin/true", depends_on=("b",))
    b = ProgramConfig(name="b", command="/bin/true", depends_on=("a",))
    with pytest.raises(ConfigError, match="circle: a -> b -> a"):
        check_programs([a, b], {}, "here.toml")


def test_not_an_ini_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid supervisord.conf"):
        load_supervisor_ini(str(write_conf(tmp_path, "command = x\n")))


# ---- TOML ---------------------------------------------------------------------------------


TOML = """\
workers = 2

[programs.queue]
command = ["python3", "-m", "worker", "--id", "%(process_num)d"]
process_name = "%(program_name)s_%(process_num)02d"
numprocs = 2
environment = { A = "1", B = 2, QUOTED = "x y" }
exitcodes = [0, 3]
stopsignal = "INT"
stopwaitsecs = 2.5
stdout_logfile = "-"
log_timestamps = true
depends_on = ["db"]

[programs.db]
command = "postgres -D '/var/lib/my data'"
autorestart = "unexpected"
priority = 1

[groups.backend]
programs = ["queue"]
"""


def test_toml_native_types(tmp_path: Path) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text(TOML)
    programs, groups = programs_from_mapping(tomllib.loads(TOML), str(path))
    queue, db = programs
    assert groups == {"backend": ["queue"]}
    specs = {s.fullname: s for s in queue.processes("backend")}
    assert specs["backend:queue_01"].argv == ("python3", "-m", "worker", "--id", "1")
    assert dict(queue.environment) == {"A": "1", "B": "2", "QUOTED": "x y"}
    assert queue.exitcodes == (0, 3) and queue.stopsignal == signal.SIGINT and queue.stopwaitsecs == 2.5
    assert queue.stdout_logfile == "-" and queue.log_timestamps and queue.depends_on == ("db",)
    assert db.processes()[0].argv == ("postgres", "-D", "/var/lib/my data") and db.priority == 1


def test_toml_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    text = TOML.replace("priority = 1", "priorty = 1")
    path = tmp_path / "arbiter.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        programs_from_mapping(tomllib.loads(text), str(path))
    message = str(info.value)
    assert f"{path}:18" in message and "priorty" in message and "did you mean 'priority'" in message


def test_toml_bad_value(tmp_path: Path) -> None:
    data = {"programs": {"x": {"command": "/bin/true", "startretries": -1}}}
    with pytest.raises(ConfigError, match=r"x.toml: \[programs.x\] startretries = -1: expected an integer of at least 0"):
        programs_from_mapping(data, str(tmp_path / "x.toml"))
