"""The control plane against a real master: `arbiter ctl`, the HTTP API, supervisorctl and the
dashboard, with real workers and programs behind them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import ROOT, run_arbiter, wait_until
from load import Load

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "supervisor"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def api(path: str, method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request(method, url, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def ctl(sock: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_arbiter(["ctl", "-s", str(sock), *args], timeout=timeout)


@pytest.fixture
def service(arbiter, tmp_path):
    """A master with two workers, a steady program, one that stays stopped, and one that crashes."""
    config = tmp_path / "arbiter.toml"
    config.write_text(textwrap.dedent(f'''
        wsgi_app = "asgi_app:app"
        workers = 2
        errorlog = "{tmp_path}/master.log"

        [programs.ticker]
        command = "python3 -u {ROOT}/examples/ticker.py"
        stdout_logfile = "{tmp_path}/ticker.log"
        startsecs = 0

        [programs.idle]
        command = "sleep 600"
        autostart = false

        [programs.crasher]
        command = "sh -c 'exit 3'"
        startsecs = 1
        startretries = 0
    '''))
    sock = tmp_path / "ctl.sock"
    master = arbiter(["-c", str(config), "--control-socket", str(sock)])
    wait_until(lambda: sock.exists() and (tmp_path / "master.log").exists(), timeout=30, what="the control socket")
    master.log_path = tmp_path / "master.log"  # the config sends the master's log there
    wait_until(lambda: "entered FATAL state" in master.log_path.read_text(), timeout=30, what="crasher FATAL")
    master.wait_ready(2)

    def all_ready() -> bool:
        workers = api(str(sock), "GET", "/v1/status")[1]["workers"]
        return len(workers) == 2 and all(w["state"] == "READY" for w in workers)

    wait_until(all_ready, timeout=30, what="both workers READY")
    master.sock = sock
    master.config = config
    return master


def test_socket_is_private(service):
    mode = stat.S_IMODE(os.stat(service.sock).st_mode)
    assert mode == 0o600


def test_ctl_status_and_exit_codes(service):
    result = ctl(service.sock, "status")
    assert result.returncode == 3, result.stdout + result.stderr  # crasher is FATAL, idle STOPPED
    assert "ticker" in result.stdout and "RUNNING" in result.stdout and "FATAL" in result.stdout
    assert ctl(service.sock, "status", "ticker").returncode == 0
    assert ctl(service.sock, "status", "idle").returncode == 3
    assert ctl(service.sock, "status", "ghost").returncode == 4
    data = json.loads(ctl(service.sock, "--json", "status").stdout)
    assert data["master"]["pid"] == service.pid
    assert sorted(w["pid"] for w in data["workers"]) == service.workers()
    assert all(w["state"] == "READY" for w in data["workers"])
    assert ctl(service.sock.parent / "nobody-here.sock", "status").returncode == 4


def test_ctl_start_stop_restart_signal_pid(service):
    assert ctl(service.sock, "start", "idle").returncode == 0
    assert ctl(service.sock, "status", "idle").returncode == 0
    again = ctl(service.sock, "start", "idle")  # supervisorctl: the line, and exit 0 (ALREADY_STARTED is ignored)
    assert (again.returncode, again.stdout) == (0, "idle: ERROR (already started)\n")
    pid = int(ctl(service.sock, "pid", "idle").stdout.strip())
    assert ctl(service.sock, "restart", "idle").returncode == 0
    assert int(ctl(service.sock, "pid", "idle").stdout.strip()) != pid
    pid = int(ctl(service.sock, "pid", "idle").stdout.strip())
    assert ctl(service.sock, "signal", "TERM", "idle").returncode == 0
    # Killed by a signal is an unexpected exit: autorestart=unexpected starts it again.
    wait_until(lambda: ctl(service.sock, "pid", "idle").stdout.strip() not in ("", "0", str(pid)),
               timeout=20, what="idle restarted after TERM")
    assert ctl(service.sock, "stop", "ticker").returncode == 0
    assert ctl(service.sock, "status", "ticker").returncode == 3
    assert int(ctl(service.sock, "pid").stdout.strip()) == service.pid
    assert ctl(service.sock, "version").stdout.strip() == "0.1.0"


def test_ctl_tail_clear_and_maintail(service, tmp_path):
    wait_until(lambda: "tick 2" in (tmp_path / "ticker.log").read_text())
    result = ctl(service.sock, "tail", "ticker")
    assert result.returncode == 0 and "tick" in result.stdout
    assert ctl(service.sock, "clear", "ticker").returncode == 0
    assert "ticker started" not in (tmp_path / "ticker.log").read_text()
    # -f follows the stream: new ticks arrive while we read.
    proc = subprocess.Popen([sys.executable, "-m", "arbiter", "ctl", "-s", str(service.sock), "tail", "-f", "ticker"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("tick ") for line in lines), lines
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "Listening at" in ctl(service.sock, "maintail").stdout


def test_reload_and_scale_through_the_api_under_load(service):
    with Load(service.port, slow=0) as load:
        load.wait_for_requests(50)
        result = ctl(service.sock, "reload", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        assert ctl(service.sock, "scale", "+2").returncode == 0
        service.wait_workers(lambda w: len(w) == 4)
        assert ctl(service.sock, "scale", "=1").returncode == 0
        service.wait_workers(lambda w: len(w) == 1)
        load.wait_for_requests(50)
        outcome = load.stop()
    assert outcome.failures == [], outcome.failures[:10]
    status = json.loads(ctl(service.sock, "--json", "status").stdout)
    assert status["master"]["generation"] == 2 and status["master"]["workers_target"] == 1
    assert ctl(service.sock, "scale", "-5").returncode != 0  # never below one


def test_bad_requests_get_4xx_and_the_master_keeps_running(service):
    sock = str(service.sock)
    assert api(sock, "POST", "/v1/scale", b"{not json")[0] == 400
    assert api(sock, "POST", "/v1/scale", b'{"spec": "lots"}')[0] == 400
    assert api(sock, "POST", "/v1/processes/ghost/start", b"{}")[0] == 404
    assert api(sock, "POST", "/v1/scale", b"x" * (2 * 1024 * 1024))[0] == 413
    assert api(sock, "GET", "/v1/nowhere")[0] == 404
    status, body = api(sock, "GET", "/v1/status")
    assert status == 200 and body["master"]["state"] == "RUNNING"
    assert service.get("/")[0] == 200


def test_metrics_and_probes(service):
    conn = UnixHTTPConnection(str(service.sock))
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'arbiter_workers{state="READY"} 2' in text
    assert 'arbiter_program_state{name="ticker",state="RUNNING"} 1' in text
    assert 'arbiter_program_state{name="crasher",state="FATAL"} 1' in text
    for path, expected in (("/healthz", 200), ("/readyz", 200)):
        conn = UnixHTTPConnection(str(service.sock))
        conn.request("GET", path)
        assert conn.getresponse().status == expected
        conn.close()


def test_shutdown_through_ctl(service):
    assert ctl(service.sock, "shutdown").returncode == 0
    assert service.wait_exit(30) == 0
    assert not service.sock.exists()


@pytest.mark.skipif(shutil.which("supervisorctl") is None, reason="supervisorctl not installed (pip install supervisor)")
def test_real_supervisorctl_drives_arbiter(arbiter, tmp_path):
    copy = tmp_path / "supervisor"
    shutil.copytree(FIXTURES, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    conf = copy / "minimal.conf"
    master = arbiter(["-c", str(conf)], bind=False, control=False)  # the conf names the socket
    wait_until(lambda: (copy / "run" / "supervisor.sock").exists(), what="the socket from [unix_http_server]")

    def supervisorctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True, text=True, timeout=60)

    wait_until(lambda: "RUNNING" in supervisorctl("status").stdout, timeout=20)
    assert supervisorctl("stop", "ticker").stdout.strip() == "ticker: stopped"
    assert "STOPPED" in supervisorctl("status", "ticker").stdout
    assert supervisorctl("start", "ticker").stdout.strip() == "ticker: started"
    assert "ticker: stopped" in supervisorctl("restart", "ticker").stdout
    wait_until(lambda: "tick" in supervisorctl("tail", "ticker").stdout)
    assert supervisorctl("update").returncode == 0
    assert master.proc.poll() is None


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_dashboard_drives_a_real_master(arbiter, tmp_path):
    """Stop and start a real program, replace a real worker (a successor boots, then the old one
    drains), follow a real log; DASHBOARD_SCREENSHOT=docs/dashboard.png keeps the picture."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    config = tmp_path / "arbiter.toml"
    config.write_text(textwrap.dedent(f'''
        wsgi_app = "asgi_app:app"
        workers = 3
        control_bind = "127.0.0.1:0"
        control_token_file = "{token_file}"

        [programs.ticker]
        command = "python3 -u {ROOT}/examples/ticker.py"
        stdout_logfile = "{tmp_path}/ticker.log"
        startsecs = 0

        [programs.queue]
        command = "sleep 600"
        numprocs = 2
        process_name = "%(program_name)s_%(process_num)d"
        startsecs = 0

        [programs.mailer]
        command = "sh -c 'echo cannot reach smtp.example >&2; exit 3'"
        startsecs = 1
        startretries = 0
    '''))
    master = arbiter(["-c", str(config)])
    workers = master.wait_ready(3)
    port = int(master.wait_log(r"Control API at: http://127\.0\.0\.1:(\d+)")[0].group(1))
    base = f"http://127.0.0.1:{port}"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with Load(master.port, slow=0) as load, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/login?token=s3cret-token")
            row = page.locator('tr[data-program="ticker"]')
            row.locator("td.state").filter(has_text="RUNNING").wait_for(timeout=15_000)
            row.locator('button[data-action="stop"]').click()
            row.locator("td.state").filter(has_text="STOPPED").wait_for(timeout=15_000)
            master.wait_log(r"stopped: ticker \(terminated by SIGTERM\)")
            row.locator('button[data-action="start"]').click()
            row.locator("td.state").filter(has_text="RUNNING").wait_for(timeout=15_000)
            page.locator("#problems li").filter(has_text="mailer").wait_for(timeout=15_000)
            assert page.locator("#programs tbody tr").first.get_attribute("data-program") == "mailer"

            old = workers[0]
            page.locator(f'tr[data-pid="{old}"] button[data-action="replace"]').click()
            master.wait_log(rf"Worker \(pid:{old}\) to be replaced")
            fresh = master.wait_workers(lambda w: len(w) == 3 and old not in w, timeout=30)
            assert len(set(fresh) - set(workers)) == 1  # one successor, the other two untouched
            page.locator(f'tr[data-pid="{old}"]').wait_for(state="detached", timeout=15_000)

            row.locator('button[data-action="log"]').click()
            page.locator("#log").filter(has_text="tick").wait_for(timeout=15_000)
            page.locator("#msg.show").wait_for(state="detached", timeout=10_000)
            if os.environ.get("DASHBOARD_SCREENSHOT"):
                page.screenshot(path=os.environ["DASHBOARD_SCREENSHOT"])
            assert not errors, errors
        finally:
            browser.close()
        load.wait_for_requests(20)
        outcome = load.stop()
    assert outcome.failures == [], outcome.failures[:10]  # replacing a worker dropped nothing
    # Without the token the API refuses.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/v1/status")
    assert conn.getresponse().status == 401
    conn.close()


def test_reread_and_update_restart_exactly_the_changed_programs(arbiter, tmp_path):
    def write(programs: str) -> None:
        config.write_text('wsgi_app = "asgi_app:app"\nworkers = 1\n' + textwrap.dedent(programs))

    config = tmp_path / "arbiter.toml"
    write('''
        [programs.keep]
        command = "sleep 600"
        startsecs = 0
        [programs.change]
        command = "sleep 601"
        startsecs = 0
        [programs.drop]
        command = "sleep 602"
        startsecs = 0
        [programs.pool]
        command = "sleep 603"
        numprocs = 2
        process_name = "%(program_name)s_%(process_num)d"
        startsecs = 0
    ''')
    sock = tmp_path / "update.sock"
    master = arbiter(["-c", str(config), "--control-socket", str(sock)])
    master.wait_ready(1)

    def pids() -> dict[str, int]:
        rows = json.loads(ctl(sock, "--json", "status").stdout)["programs"]
        return {row["name"]: row["pid"] for row in rows if row["state"] == "RUNNING"}

    def running(expected: set[str]) -> dict[str, int] | None:
        current = pids()
        return current if set(current) == expected else None

    before = wait_until(lambda: running({"keep", "change", "drop", "pool_0", "pool_1"}), timeout=20,
                        what="5 programs RUNNING")
    write('''
        [programs.keep]
        command = "sleep 600"
        startsecs = 0
        [programs.change]
        command = "sleep 611"
        startsecs = 0
        [programs.pool]
        command = "sleep 603"
        numprocs = 3
        process_name = "%(program_name)s_%(process_num)d"
        startsecs = 0
        [programs.new]
        command = "sleep 604"
        startsecs = 0
    ''')
    reread = ctl(sock, "reread")
    assert reread.returncode == 0
    for line in ("change: changed", "drop: disappeared", "new: available", "pool: changed"):
        assert line in reread.stdout, reread.stdout
    assert ctl(sock, "update").returncode == 0
    after = wait_until(lambda: running({"keep", "change", "pool_0", "pool_1", "pool_2", "new"}), timeout=20,
                       what="the updated set RUNNING")
    assert after["keep"] == before["keep"]  # untouched
    assert after["pool_0"] == before["pool_0"] and after["pool_1"] == before["pool_1"]  # numprocs in place
    assert after["change"] != before["change"]  # restarted with its new command
    assert "drop" not in after
    assert master.get("/")[0] == 200


def _conf_with_inet(tmp_path: Path, auth: str) -> Path:
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f'''
        [inet_http_server]
        port = 127.0.0.1:0
        {auth}

        [supervisord]
        nodaemon = true

        [program:ticker]
        command = python3 -u {ROOT}/examples/ticker.py
        startsecs = 0
    '''))
    return conf


def test_tcp_control_without_a_credential_is_refused_at_start(tmp_path):
    result = run_arbiter(["asgi_app:app", "-b", "127.0.0.1:0", "--control-bind", "127.0.0.1:0"])
    assert result.returncode == 2, result.stderr
    assert "without a credential" in result.stderr
    assert "secrets.token_urlsafe(32))' > token" in result.stderr and "--control-token-file token" in result.stderr
    assert "Listening at" not in result.stderr  # refused before anything was bound
    result = run_arbiter(["-c", str(_conf_with_inet(tmp_path, ""))])
    assert result.returncode == 2, result.stderr
    assert "[inet_http_server] has no username" in result.stderr
    assert "username = NAME" in result.stderr and "password = SECRET" in result.stderr
    conf = _conf_with_inet(tmp_path, "username = admin\n        password = topsecret-pw")
    shown = run_arbiter(["-c", str(conf), "--print-config"])
    assert shown.returncode == 0 and "topsecret" not in shown.stdout + shown.stderr  # never printed


@pytest.mark.skipif(shutil.which("supervisorctl") is None, reason="supervisorctl not installed (pip install supervisor)")
@pytest.mark.parametrize("stored", ["s3cret pass", "{SHA}" + __import__("hashlib").sha1(b"s3cret pass").hexdigest()])
def test_real_supervisorctl_over_tcp_with_basic_auth(arbiter, tmp_path, stored):
    conf = _conf_with_inet(tmp_path, f"username = admin\n        password = {stored}")
    master = arbiter(["-c", str(conf)], bind=False)
    port = int(master.wait_log(r"Control API at: http://127\.0\.0\.1:(\d+)")[0].group(1))
    assert "s3cret" not in master.log() and stored not in master.log()

    def supervisorctl(*auth: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["supervisorctl", "-s", f"http://127.0.0.1:{port}", *auth, "status"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    good = wait_until(lambda: (r := supervisorctl("-u", "admin", "-p", "s3cret pass")) and "RUNNING" in r.stdout and r,
                      timeout=20, what="ticker RUNNING over TCP")
    assert good.returncode == 0 and good.stdout.startswith("ticker")
    for auth in ([], ["-u", "admin", "-p", "wrong"], ["-u", "root", "-p", "s3cret pass"]):
        refused = supervisorctl(*auth)
        assert refused.returncode != 0 and "RUNNING" not in refused.stdout, auth
        assert "401" in refused.stdout + refused.stderr or "Unauthorized" in refused.stdout + refused.stderr
    # Supervisor's client library (and Cesi, built on it): Python's ServerProxy sends the pair
    # from the URL as Basic auth.
    import xmlrpc.client
    proxy = xmlrpc.client.ServerProxy(f"http://admin:{quote('s3cret pass')}@127.0.0.1:{port}/RPC2")
    assert proxy.supervisor.getState()["statename"] == "RUNNING"
    with pytest.raises(xmlrpc.client.ProtocolError) as refused_rpc:
        xmlrpc.client.ServerProxy(f"http://admin:nope@127.0.0.1:{port}/RPC2").supervisor.getState()
    assert refused_rpc.value.errcode == 401
    # The probes stay open; everything else needs the pair.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for path, expected in (("/healthz", 200), ("/v1/status", 401), ("/metrics", 401)):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == expected, path
    conn.close()


def test_master_uptime_is_monotonic_as_reported(arbiter, tmp_path):
    """The uptime the API reports grows exactly as the monotonic clock between two readings
    (the wall-clock `started` is only a date)."""
    sock = tmp_path / "up.sock"
    master = arbiter(["asgi_app:app", "--control-socket", str(sock)])
    master.wait_ready(1)
    import time as time_module
    first, t0 = api(str(sock), "GET", "/v1/status")[1]["master"], time_module.monotonic()
    wait_until(lambda: time_module.monotonic() - t0 > 0.3)
    second, t1 = api(str(sock), "GET", "/v1/status")[1]["master"], time_module.monotonic()
    grew = second["uptime"] - first["uptime"]
    assert 0.3 - 0.01 <= grew <= (t1 - t0) + 0.1
    assert abs(second["started"] - (time_module.time() - second["uptime"])) < 5  # a date, consistent
    conn = UnixHTTPConnection(str(sock))
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    uptime = float(next(l.split()[1] for l in text.splitlines() if l.startswith("arbiter_master_uptime_seconds")))
    assert second["uptime"] <= uptime < second["uptime"] + 5


def test_stop_all_leaves_a_fatal_program_out_as_supervisorctl(service):
    """supervisord's stopAllProcesses stops only what runs: a FATAL program is not "stopped"."""
    result = ctl(service.sock, "stop", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ticker: stopped" in result.stdout
    assert "crasher" not in result.stdout and "idle" not in result.stdout
    assert ctl(service.sock, "stop", "crasher").stdout.strip() == "crasher: ERROR (not running)"


@pytest.mark.skipif(shutil.which("supervisorctl") is None, reason="supervisorctl not installed (pip install supervisor)")
def test_avail_shows_the_group_priority(arbiter, tmp_path):
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f'''
        [unix_http_server]
        file = {tmp_path}/avail.sock

        [supervisord]
        nodaemon = true

        [supervisorctl]
        serverurl = unix://{tmp_path}/avail.sock

        [group:web]
        programs = sleeper
        priority = 100

        [program:sleeper]
        command = sleep 600
        startsecs = 0

        [program:manual]
        command = sleep 600
        autostart = false
    '''))
    arbiter(["-c", str(conf)], bind=False, control=False)
    wait_until(lambda: (tmp_path / "avail.sock").exists(), what="the socket")
    theirs = subprocess.run(["supervisorctl", "-c", str(conf), "avail"], capture_output=True, text=True, timeout=30)
    ours = ctl(tmp_path / "avail.sock", "avail")
    for out in (theirs.stdout, ours.stdout):
        lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
        assert lines["web:sleeper"] == ["in", "use", "auto", "100:100"], out
        assert lines["manual"] == ["in", "use", "manual", "999:999"], out
