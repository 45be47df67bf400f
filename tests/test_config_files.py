"""Which config file is read, and how: a Gunicorn Python config whatever its name, a
supervisord.conf only when it has sections, TOML by its name; ./gunicorn.conf.py and
./arbiter.toml read by themselves; $GUNICORN_CMD_ARGS where Gunicorn reads it."""

from __future__ import annotations

import re
import textwrap

import pytest
from conftest import http_get, run_arbiter, wait_until

from arbiter.config import loader as config
from arbiter.config.loader import Value
from arbiter.errors import ConfigError


def build(cli=None, env=None, cwd=None):
    cli_values = {key: Value(raw, f"option --{key}") for key, raw in (cli or {}).items()}
    return config.build(cli_values, env or {}, cwd=str(cwd) if cwd else None)


GUIDE_CONF = """\
# The classic guide's gunicorn.conf: a Python file with no .py suffix.
import multiprocessing

bind = "127.0.0.1:0"
workers = 2
threads = 2
worker_class = "uvicorn.workers.UvicornWorker"
pidfile = {pid!r}
accesslog = {access!r}
errorlog = {error!r}
"""


def test_the_guides_gunicorn_conf_serves(arbiter, tmp_path):
    pid, access, error = tmp_path / "app.pid", tmp_path / "access.log", tmp_path / "error.log"
    conf = tmp_path / "gunicorn.conf"
    conf.write_text(GUIDE_CONF.format(pid=str(pid), access=str(access), error=str(error)))
    master = arbiter(["-c", str(conf), "asgi_app:app"], bind=False)
    found = wait_until(lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+)",
                                         error.read_text() if error.exists() else ""), 20, what="listening")
    port = int(found.group(1))
    master.wait_workers(lambda pids: len(pids) == 2)
    assert wait_until(lambda: http_get(port, "/")[0] == 200, 10)
    assert int(pid.read_text()) == master.pid
    wait_until(lambda: access.exists() and '"GET / HTTP/1.1" 200' in access.read_text(), 10, what="access line")
    assert "Using worker: uvicorn" in error.read_text()


def test_any_name_without_sections_is_a_python_config(tmp_path):
    conf = tmp_path / "conf" / "prod"
    conf.parent.mkdir()
    conf.write_text("workers = 4\ntimeout = 12\n\ndef post_fork(server, worker):\n    pass\n")
    cfg = build(cli={"config": str(conf)})
    assert (cfg.workers, cfg.timeout) == (4, 12) and callable(cfg.post_fork)
    ini_named = tmp_path / "gunicorn.ini"  # .ini/.conf no longer mean supervisord by themselves
    ini_named.write_text("workers = 5\n")
    assert build(cli={"config": str(ini_named)}).workers == 5


def test_python_module_config(tmp_path, monkeypatch):
    package = tmp_path / "deploy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gunicorn_settings.py").write_text("from os import path\nworkers = 6\nbacklog = 64\n"
                                                   "def when_ready(server):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = build(cli={"config": "python:deploy.gunicorn_settings"})
    assert (cfg.workers, cfg.backlog) == (6, 64) and callable(cfg.when_ready)
    (package / "typo.py").write_text("wrokers = 2\n")
    warnings = build(cli={"config": "python:deploy.typo"}).extras.warnings
    assert warnings == (f"{package / 'typo.py'}:1: unknown setting 'wrokers'; did you mean 'workers'?; ignored",)
    with pytest.raises(ConfigError, match=r"python:deploy\.missing: cannot import the config module"):
        build(cli={"config": "python:deploy.missing"})


DOCKER_IMAGE_CONF = """\
import json
import multiprocessing
import os

workers_per_core_str = os.getenv("WORKERS_PER_CORE", "1")
web_concurrency_str = os.getenv("WEB_CONCURRENCY", None)
host = os.getenv("HOST", "0.0.0.0")
port = os.getenv("PORT", "80")
use_loglevel = os.getenv("LOG_LEVEL", "info")
cores = multiprocessing.cpu_count()
web_concurrency = max(int(float(workers_per_core_str) * cores), 2)

# Gunicorn config variables
loglevel = use_loglevel
workers = web_concurrency
bind = f"{host}:{port}"
worker_tmp_dir = "/dev/shm"
keepalive = 5
log_data = {"loglevel": loglevel, "workers": workers, "bind": bind}
print(json.dumps(log_data))
"""


def test_a_docker_images_config_with_helper_variables_is_read(tmp_path, capsys):
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(DOCKER_IMAGE_CONF)
    cfg = build(cli={"config": str(conf)})
    assert cfg.workers >= 2 and cfg.bind == ("0.0.0.0:80",) and cfg.keepalive == 5
    assert cfg.extras.warnings[0] == (
        f"{conf}: not settings, ignored as Gunicorn ignores them (name a helper _like_this to say so): "
        "workers_per_core_str, web_concurrency_str, host, port, use_loglevel, cores, web_concurrency, log_data")
    assert "--worker-tmp-dir is ignored" not in cfg.extras.warnings[1]
    assert cfg.extras.warnings[1].endswith("'worker_tmp_dir' is ignored: no heartbeat files here: workers report "
                                           "to the master through a shared-memory scoreboard")


def test_a_file_with_sections_is_a_supervisord_conf_whatever_its_name(tmp_path):
    conf = tmp_path / "services"
    conf.write_text("[supervisord]\nidentifier = box\n\n[program:tick]\ncommand = /bin/sleep 30\n")
    cfg = build(cli={"config": str(conf)})
    assert [program.name for program in cfg.programs] == ["tick"] and cfg.proc_name == "box"


def test_a_file_that_is_none_of_them_says_what_was_tried(tmp_path):
    conf = tmp_path / "settings.cfg"
    conf.write_text("workers: 3\nbind: 127.0.0.1:8000\n")
    with pytest.raises(ConfigError) as info:
        build(cli={"config": str(conf)})
    assert str(info.value) == (
        f"{conf}: not a config file Arbiter can read: not a supervisord.conf (no [section] header), "
        "not TOML (the name does not end in .toml), not a Gunicorn Python config (line 2: invalid syntax)")


def test_default_files_and_which_wins(tmp_path):
    assert build(cwd=tmp_path).config is None
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\n")
    cfg = build(cwd=tmp_path)
    assert cfg.workers == 3 and cfg.config == str(tmp_path / "gunicorn.conf.py")
    assert cfg.extras.notes == (f"Reading ./gunicorn.conf.py, found in {tmp_path} (no -c given)",)
    (tmp_path / "arbiter.toml").write_text("workers = 5\n")
    cfg = build(cwd=tmp_path)
    assert cfg.workers == 5 and cfg.config == str(tmp_path / "arbiter.toml")
    assert cfg.extras.warnings == ("./gunicorn.conf.py is not read because ./arbiter.toml is there too; "
                                   "pass -c gunicorn.conf.py to use it",)
    named = tmp_path / "other.toml"
    named.write_text("workers = 7\n")
    cfg = build(cli={"config": str(named)}, cwd=tmp_path)
    assert cfg.workers == 7 and cfg.extras.notes == ()


def test_gunicorn_cmd_args_sits_between_the_file_and_the_command_line(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 2\ntimeout = 5\nkeepalive = 4\n")
    env = {"GUNICORN_CMD_ARGS": "-w 3 --timeout=6 --keep-alive 8 --access-logfile '-' -b 127.0.0.1:1 -b [::1]:2",
           "ARBITER_TIMEOUT": "7"}
    cfg = build(cli={"keepalive": "9"}, env=env, cwd=tmp_path)
    assert cfg.workers == 3  # GUNICORN_CMD_ARGS beats the file
    assert cfg.timeout == 7  # ARBITER_* beats GUNICORN_CMD_ARGS
    assert cfg.keepalive == 9  # the command line beats everything
    assert cfg.accesslog == "-" and cfg.bind == ("127.0.0.1:1", "[::1]:2")
    other = tmp_path / "other.py"
    other.write_text("workers = 11\n")
    assert build(env={"GUNICORN_CMD_ARGS": f"-c {other}"}, cwd=tmp_path).workers == 11
    with pytest.raises(ConfigError, match=r"^environment variable GUNICORN_CMD_ARGS: No such option '--wrokers'"):
        build(env={"GUNICORN_CMD_ARGS": "--wrokers 2"})
    with pytest.raises(ConfigError, match=r"^environment variable GUNICORN_CMD_ARGS \(--workers\): 'workers' must"):
        build(env={"GUNICORN_CMD_ARGS": "-w many"})


def test_auto_loaded_gunicorn_conf_and_gunicorn_cmd_args_take_effect(arbiter, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\nproc_name = 'guide'\n")
    master = arbiter(["wsgi_app:application"], cwd=tmp_path, env={"GUNICORN_CMD_ARGS": "-w 3"})
    master.wait_ready(3)
    master.wait_log(r"\[INFO\] Reading \./gunicorn\.conf\.py, found in ")
    assert "arbiter: worker [guide]" in " ".join(__import__("psutil").Process(master.workers()[0]).cmdline())


def test_both_default_files_the_log_says_which_is_read(arbiter, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\n")
    (tmp_path / "arbiter.toml").write_text("workers = 2\n")
    master = arbiter(["wsgi_app:application"], cwd=tmp_path)
    master.wait_ready(2)
    master.wait_log(r"\[WARNING\] \./gunicorn\.conf\.py is not read because \./arbiter\.toml is there too")


def test_check_config_prints_every_warning_a_start_prints(arbiter, tmp_path):
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent("""\
        [supervisord]
        nodaemon = true

        [program:tick]
        command = /bin/sleep 30
        bogus_key = 1
        [group:ticks
        programs = tick

        [fcgi-program:x]
        command = cat
        socket = unix:///tmp/x.sock
        """))
    env = {"ARBITER_URL": "http://elsewhere"}
    check = run_arbiter(["-c", str(conf), "--check-config"], env=env)
    assert check.returncode == 0, check.stderr
    checked = re.findall(r"^WARNING: (.*)$", check.stderr, re.MULTILINE)
    master = arbiter(["-c", str(conf)], bind=False, env=env)
    master.wait_log(r"spawned: 'tick'")
    started = re.findall(r"\[WARNING\] (.*)$", master.log(), re.MULTILINE)
    assert checked == started[:len(checked)] and len(checked) == 5, (checked, started)
    assert any("bogus_key" in line for line in checked)
    assert any("[group" in line for line in checked)
    assert any("[fcgi-program:x]" in line for line in checked)
    assert any("ARBITER_URL" in line for line in checked)


def test_ctl_reads_the_default_file_as_the_master_does(tmp_path, monkeypatch):
    from arbiter.ctl.client import socket_from_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "gunicorn.conf.py").write_text("control_socket = 'from-gunicorn.sock'\n")
    assert socket_from_config(None, {}, str(tmp_path)) == str(tmp_path / "from-gunicorn.sock")
    (tmp_path / "arbiter.toml").write_text("control_socket = 'from-toml.sock'\n")
    assert socket_from_config(None, {}, str(tmp_path)) == str(tmp_path / "from-toml.sock")


def test_hup_rereads_the_default_file_from_where_arbiter_started(arbiter, tmp_path):
    import signal

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 1\n")
    elsewhere = tmp_path / "app"
    elsewhere.mkdir()
    master = arbiter(["wsgi_app:application", "--chdir", str(elsewhere)], cwd=tmp_path)
    master.wait_ready(1)
    conf.write_text("workers = 2\n")
    master.signal(signal.SIGHUP)
    master.wait_workers(lambda pids: len(pids) == 2, what="the file's new worker count after HUP")
