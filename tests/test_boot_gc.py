"""Start-up runs without the cyclic collector and freezes what it built (arbiter/__main__.py,
web/boot.py): each worker must serve with the collector back on, and the app's import-time
objects frozen, whether the master or the worker imported the app."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("preload", [False, True], ids=["worker-imports", "preload"])
def test_workers_serve_with_the_collector_on_and_the_app_frozen(arbiter, preload: bool) -> None:
    master = arbiter(["gc_app:app", "-w", "2", *(["--preload"] if preload else [])])
    master.wait_ready(2)
    status, body = master.get("/")
    assert status == 200
    assert b"enabled=True" in body
    assert b"frozen=True" in body
