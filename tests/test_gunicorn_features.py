"""Gunicorn's features behind its flags, end to end: real masters, real sockets."""

from __future__ import annotations

import os
import re

import psutil
import pytest
from conftest import http_get, replace_file, run_arbiter, wait_until


def _pid_of_answer(port: int) -> int:
    status, body = http_get(port, "/")
    assert status == 200
    return int(re.search(rb"pid=(\d+)", body).group(1))


def test_reuse_port_lets_a_second_master_bind_the_same_port(arbiter):
    first = arbiter(["wsgi_app:application", "--reuse-port"])
    first.wait_ready(1)
    port = first.port
    second = arbiter(["wsgi_app:application", "--reuse-port", "-b", f"127.0.0.1:{port}"])
    second.wait_log(rf"Listening at: http://127\.0\.0\.1:{port}\b")
    second.wait_ready(1)
    workers = set(first.workers()) | set(second.workers())
    # The kernel spreads new connections over both masters' sockets: both answer.
    seen = wait_until(lambda: workers <= {_pid_of_answer(port) for _ in range(40)} or None, 20,
                      what="answers from both masters' workers")
    assert seen


def test_without_reuse_port_the_second_master_cannot_bind(arbiter):
    first = arbiter(["wsgi_app:application"])
    first.wait_ready(1)
    result = run_arbiter(["wsgi_app:application", "-b", f"127.0.0.1:{first.port}"])
    assert result.returncode != 0 and "address already in use" in result.stderr


PASTE_INI = """\
[app:main]
use = call:paste_app:make_app
greeting = hello

[app:other]
use = call:paste_app:make_app
greeting = howdy

[loggers]
keys = root, gunicorn.error

[handlers]
keys = file

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers =

[logger_gunicorn.error]
level = INFO
handlers = file
propagate = 0
qualname = gunicorn.error

[handler_file]
class = FileHandler
formatter = plain
args = ({log!r}, "a")

[formatter_plain]
format = PASTE %(message)s
"""


def test_paste_serves_a_pastedeploy_app_with_its_global_conf_and_logging(arbiter, tmp_path):
    log = tmp_path / "paste.log"
    ini = tmp_path / "production.ini"
    ini.write_text(PASTE_INI.format(log=str(log)))
    arbiter(["--paste", str(ini), "--paste-global", "region=eu"])
    port = int(wait_until(lambda: log.exists() and re.search(r"PASTE Listening at: http://127\.0\.0\.1:(\d+)",
                                                             log.read_text()), 20, what="listening").group(1))
    assert http_get(port, "/p") == (200, b"hello from eu at |/p\n")
    arbiter([f"--paster={ini}#other"])
    port2 = int(wait_until(lambda: len(re.findall(r"PASTE Listening at: http://127\.0\.0\.1:(\d+)",
                                                  log.read_text())) > 1 and
                           re.findall(r"PASTE Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())[-1],
                           20, what="second listening"))
    assert http_get(port2, "/")[1] == b"howdy from - at |/\n"


def test_paste_and_an_app_are_refused_together(tmp_path):
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nuse = call:paste_app:make_app\n")
    result = run_arbiter(["wsgi_app:application", "--paste", str(ini)])
    assert result.returncode == 2 and "an APP and --paste name two apps" in result.stderr


def _user_with_supplementary_groups() -> tuple[str, set[int]] | None:
    import grp
    import pwd

    for group in grp.getgrall():
        for member in group.gr_mem:
            try:
                user = pwd.getpwnam(member)
            except KeyError:
                continue
            groups = {g.gr_gid for g in grp.getgrall() if member in g.gr_mem}
            if group.gr_gid != user.pw_gid:
                return member, groups
    return None


def _groups_of(pid: int) -> set[int]:
    with open(f"/proc/{pid}/status") as handle:
        line = next(line for line in handle if line.startswith("Groups:"))
    return {int(gid) for gid in line.split()[1:]}


@pytest.mark.skipif(os.geteuid() != 0 or _user_with_supplementary_groups() is None,
                    reason="needs root and a user with supplementary groups")
def test_initgroups_gives_workers_the_users_supplementary_groups(arbiter):
    user, groups = _user_with_supplementary_groups()
    with_groups = arbiter(["wsgi_app:application", "-u", user, "--initgroups"])
    worker = with_groups.wait_workers(lambda pids: len(pids) == 1)[0]
    assert groups <= wait_until(lambda: _groups_of(worker) or None, 10)
    without = arbiter(["wsgi_app:application", "-u", user])
    worker = without.wait_workers(lambda pids: len(pids) == 1)[0]
    wait_until(lambda: psutil.Process(worker).uids().real != 0, 10, what="the worker to drop root")
    assert _groups_of(worker) == set()  # neither root's groups nor the user's


@pytest.mark.parametrize("engine", ["poll", "inotify"])
def test_reload_extra_file_and_engine(arbiter, tmp_path, engine):
    pytest.importorskip("watchfiles")
    template = tmp_path / "templates" / "page.html"
    template.parent.mkdir()
    template.write_text("one")
    master = arbiter(["wsgi_app:application", "--reload", "--reload-engine", engine,
                      "--reload-extra-file", str(template), "--chdir", str(tmp_path)])
    master.wait_ready(1)
    master.wait_log(r"Watching .*page\.html for changes")
    (tmp_path / "notes.txt").write_text("not watched")
    replace_file(template, "two")
    master.wait_log(r"changed .*page\.html; reloading", timeout=30)
    master.wait_log(r"Reload done: generation 2", timeout=30)
    assert "notes.txt" not in master.log()


def test_spew_traces_the_workers_lines(arbiter):
    master = arbiter(["wsgi_app:application", "--spew"])
    master.wait_log(r"Listening at")
    wait_until(lambda: master.get("/spewed")[0] == 200, 30)
    master.wait_log(r"\[\d+\] .*wsgi_app\.py:\d+: +path = environ\[\"PATH_INFO\"\]")
