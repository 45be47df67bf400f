"""The fleet page in a real headless Chromium: log in, see the nodes (failing ones first), restart
a program, see the activity entry. Set FLEET_SCREENSHOT=docs/fleet.png to keep the picture.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` package; skipped otherwise.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from fleet_helpers import (  # noqa: F401  (fixture)
    PASSWORD, add_user, start_fleet, start_node, supervisord, write_fleet_config)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)")

PROGRAMS = '''
    [programs.ticker]
    command = "sleep 600"
    startsecs = 0
    [programs.pool]
    command = "sleep 601"
    numprocs = 3
    process_name = "%(program_name)s_%(process_num)d"
    startsecs = 0
'''
BROKEN = PROGRAMS + '''
    [programs.mailer]
    command = "/nonexistent/mailer --queue outbound"
    startretries = 0
'''


def test_log_in_restart_a_program_and_see_the_activity(arbiter, supervisord, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    web1 = start_node(arbiter, tmp_path, "web-1", workers=2, programs=PROGRAMS)
    web2 = start_node(arbiter, tmp_path, "web-2", workers=2, programs=BROKEN)
    api1 = start_node(arbiter, tmp_path, "api-1", programs=PROGRAMS)
    sup = supervisord()
    with socket.socket() as closed:  # a node whose host is down: nothing listens on its port
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    dead = (f'[[nodes]]\nname = "web-3"\nenvironment = "production"\nurl = "http://127.0.0.1:{dead_port}"\n'
            f'token_file = "{web1.token_file}"\n')
    config = write_fleet_config(tmp_path, [web1, web2, api1], [("batch-legacy", sup)],
                                environments={"api-1": "staging"}, raw_nodes=dead)
    add_user(config, "alice", "operator")
    for node in (web1, web2, api1):
        node.master.wait_ready(2 if node is not api1 else 1)
    server = start_fleet(arbiter, config)
    pid_before = web1.program_pid("ticker")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server.url + "/")
            page.fill("#username", "alice")
            page.fill("#password", "wrong password")
            page.click("#login-form button[type=submit]")
            page.locator("#login-error").filter(has_text="wrong username or password").wait_for(timeout=10_000)
            errors.clear()  # the 401 of that login is logged by Chromium as a console error
            page.fill("#password", PASSWORD)
            page.click("#login-form button[type=submit]")
            row = page.locator('tr[data-process="web-1/ticker"]')
            row.locator(".state").filter(has_text="RUNNING").wait_for(timeout=15_000)
            dead_row = page.locator('tr[data-node="web-3"]')
            dead_row.filter(has_text="unreachable").wait_for(timeout=15_000)
            assert page.locator('tr[data-node="batch-legacy"]').count() == 1
            # Failing things first: the dead node heads production, the FATAL program heads web-2.
            production = page.locator('section[data-env="production"] tr.node')
            assert production.first.get_attribute("data-node") == "web-3"
            page.locator('tr[data-process="web-2/mailer"] .state').filter(has_text="FATAL").wait_for(timeout=20_000)
            first_proc = page.locator('tr[data-node="web-2"] ~ tr.proc').first
            assert first_proc.get_attribute("data-process") == "web-2/mailer"

            row.locator('button[data-action="restart"]').click()
            page.locator("#activity li").filter(has_text="alice restart web-1 ticker").filter(has_text="OK") \
                .wait_for(timeout=20_000)
            assert web1.program_pid("ticker") != pid_before
            page.locator('tr[data-process="web-1/ticker"] td.pid').filter(
                has_text=str(web1.program_pid("ticker"))).wait_for(timeout=10_000)

            page.locator('tr[data-node="api-1"] button[data-action="scale-up"]').click()
            page.locator("#msg").filter(has_text="scale api-1: done").wait_for(timeout=20_000)
            page.locator('tr[data-process="api-1/web:worker_1"]').wait_for(timeout=20_000)
            page.locator('tr[data-group="web-2/pool"] button[data-action="stop"]').click()
            page.locator("#msg").filter(has_text="stop web-2/pool:*: done").wait_for(timeout=20_000)
            page.locator('tr[data-process="web-2/pool:pool_0"] .state').filter(has_text="STOPPED").wait_for(timeout=20_000)
            page.locator('tr[data-group="web-2/pool"] button[data-action="start"]').click()
            page.locator('tr[data-process="web-2/pool:pool_0"] .state').filter(has_text="RUNNING").wait_for(timeout=20_000)

            page.on("dialog", lambda dialog: dialog.accept())  # "Reload every Arbiter node of staging...?"
            page.locator('section[data-env="staging"] button[data-action="deploy"]').click()
            page.locator("#deploys li").filter(has_text="staging").filter(has_text="done") \
                .filter(has_text="api-1:done").wait_for(timeout=60_000)

            page.fill("#filter", "pool")
            page.wait_for_function("document.querySelectorAll('tr.proc').length === 9")
            page.fill("#filter", "web-2 fatal")
            page.wait_for_function("document.querySelectorAll('tr.proc').length === 1")
            page.fill("#filter", "")
            page.locator('tr[data-process="batch-legacy/legacy"] button[data-action="log"]').click()
            page.locator("#log").filter(has_text="tick").wait_for(timeout=15_000)
            page.click("#log-close")
            page.evaluate("window.scrollTo(0, 0)")
            shot = os.environ.get("FLEET_SCREENSHOT") or str(tmp_path / "fleet.png")
            page.screenshot(path=shot, full_page=False)
            assert not errors, errors
        finally:
            browser.close()
