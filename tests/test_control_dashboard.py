"""The dashboard in a real headless Chromium: live tables, a stop button, the log view.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package; skipped with
the reason otherwise (Playwright's own browser download is never used).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arbiter.control.records import ReplaceWorkerArgs

from control_helpers import make_loop  # noqa: F401  (fixture)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TOKEN = "dashboard-token"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing "
                                "(apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_dashboard_stop_a_program_and_follow_its_log(make_loop, browser: Any, tmp_path: Path) -> None:
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), token=TOKEN)
    broken = loop.backend.programs[4]
    broken.update(state="FATAL", description="Exited too quickly (process log may have details)")
    base = f"http://127.0.0.1:{loop.port}"
    page = browser.new_page(viewport={"width": 1400, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(f"{base}/login?token={TOKEN}")  # trades the token for the session cookie
    assert page.url == f"{base}/"
    row = page.locator('tr[data-program="ticker"]')
    row.locator("td.state").filter(has_text="RUNNING").wait_for(timeout=10_000)
    assert page.locator("#workers tbody tr").count() == 2
    assert "2/2 ready" in page.locator("#master").inner_text()

    # What is failing comes first: the health card and the list above the tables, and the
    # failing program heads its table.
    assert page.locator(".card.bad").first.inner_text().splitlines()[1] == "1 problem"
    problem = page.locator("#problems li")
    assert problem.count() == 1 and "broken" in problem.inner_text() and "Exited too quickly" in problem.inner_text()
    assert page.locator("#programs tbody tr").first.get_attribute("data-program") == "broken"

    row.locator('button[data-action="stop"]').click()
    row.locator("td.state").filter(has_text="STOPPED").wait_for(timeout=10_000)
    stop = [c for c in loop.backend.commands if c.name == "stop"]
    assert stop and stop[-1].args.names == ("ticker",)
    assert row.locator('button[data-action="stop"]').is_disabled()

    row.locator('button[data-action="start"]').click()
    row.locator("td.state").filter(has_text="RUNNING").wait_for(timeout=10_000)

    page.locator('tr[data-program="pool:pool_0"] button[data-action="log"]').click()
    log = page.locator("#log")
    log.filter(has_text="pool_0 stdout line 1").wait_for(timeout=10_000)
    with open(loop.backend.programs[1]["stdout_logfile"], "ab") as f:
        f.write(b"written while the page watches\n")
    log.filter(has_text="written while the page watches").wait_for(timeout=10_000)
    page.click("#s-stderr")
    log.filter(has_text="pool_0 stderr line 1").wait_for(timeout=10_000)
    assert "stdout line" not in log.inner_text()

    # Replace one worker: the API asks the pool for a successor, then the old one drains.
    page.locator('tr[data-pid="4100001"] button[data-action="replace"]').click()
    page.locator('tr[data-pid="4100001"]').wait_for(state="detached", timeout=10_000)
    page.locator('tr[data-pid="4100003"]').wait_for(timeout=10_000)
    assert [c.args for c in loop.backend.commands if c.name == "replace_worker"] == [ReplaceWorkerArgs(4100001)]

    page.fill("#spec", "+1")
    page.click("#scale")
    page.locator("#workers tbody tr").nth(2).wait_for(timeout=10_000)
    assert loop.backend.master["workers_target"] == 3
    page.click("#reload")
    page.locator("#msg").filter(has_text="/v1/reload: done").wait_for(timeout=10_000)
    page.click("#s-stdout")
    log.filter(has_text="written while the page watches").wait_for(timeout=10_000)
    page.locator("#msg.show").wait_for(state="detached", timeout=10_000)  # the toast fades
    shot = Path(os.environ["DASHBOARD_SCREENSHOT"]) if os.environ.get("DASHBOARD_SCREENSHOT") else tmp_path / "dashboard.png"
    page.screenshot(path=str(shot))
    assert not errors, errors  # no CSP violation, no script error


def test_dashboard_cannot_be_framed_or_used_cross_origin(make_loop, browser: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), token=TOKEN)
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"http://127.0.0.1:{loop.port}/login?token={TOKEN}")
    assert response.headers["x-frame-options"] == "DENY"
    # A page of another origin on this machine (another port: the same site, so the browser
    # sends the SameSite=Strict session cookie along) posts to the API with credentials (a
    # "simple" request, sent without preflight): the server refuses it for its Origin, the page
    # learns nothing, no command runs.
    with _other_origin() as origin:
        other = context.new_page()
        other.goto(origin)
        result = other.evaluate("""async (url) => {
            try { const r = await fetch(url, {method: 'POST', body: '{"spec":"+5"}', credentials: 'include',
                                              headers: {'Content-Type': 'text/plain'}});
                  return 'status ' + r.status; }
            catch (e) { return 'blocked'; } }""", f"http://127.0.0.1:{loop.port}/v1/scale")
    assert result == "blocked"
    assert loop.backend.master["workers_target"] == 2 and not loop.backend.commands
    assert f"cross-origin request from '{origin.rstrip('/')}' refused" in caplog.text


@contextlib.contextmanager
def _other_origin() -> Iterator[str]:
    """A page served from another loopback port: another origin, in the same address space."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><p>elsewhere</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
