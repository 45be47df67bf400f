"""Log helpers driven by a fake clock."""

from __future__ import annotations

import logging

import pytest

from arbiter.logs import RepeatedError


@pytest.fixture
def records(caplog):
    caplog.set_level(logging.DEBUG, logger="test.repeat")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "test.repeat"]


def test_a_persisting_error_is_logged_once_then_counted_every_period(records):
    trouble = RepeatedError(logging.getLogger("test.repeat"), "Cannot accept connections", every=10.0)
    now = 100.0
    for _ in range(20):  # EMFILE twice a second for 10 s
        trouble.occurred(now, "[Errno 24] Too many open files")
        now += 0.5
    assert records() == ["Cannot accept connections: [Errno 24] Too many open files"]
    trouble.occurred(now, "[Errno 24] Too many open files")  # t = 110: one summary
    summary = "Cannot accept connections: [Errno 24] Too many open files (20 more times in the last 10 s)"
    assert records()[1:] == [summary]
    trouble.occurred(now + 0.5, "again")
    assert len(records()) == 2
    trouble.cleared(now + 1.0)
    assert records()[2:] == ["Cannot accept connections: recovered after 11.0 s"]
    trouble.cleared(now + 2.0)  # nothing to clear: silent
    trouble.occurred(now + 3.0, "back")  # a new episode is logged at once
    assert records()[3:] == ["Cannot accept connections: back"]
