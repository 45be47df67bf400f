"""The event core without processes: types and payloads, the listener protocol, the buffers.

The bytes a listener exchanges are checked against Supervisor's own `childutils`, the library
real listeners are written with, so the two sides are proven to speak the same protocol."""

from __future__ import annotations

import io

import pytest
from supervisor import childutils

from arbiter.events import types as ev
from arbiter.events.listener import ListenerProtocol, ListenerState, Verdict, default_handler
from arbiter.events.pool import EventBus, EventPool


def test_a_parent_subscription_gets_its_children_and_arbiter_events_stay_apart() -> None:
    assert ev.subscribed(frozenset({"PROCESS_STATE"}), "PROCESS_STATE_EXITED")
    assert ev.subscribed(frozenset({"EVENT"}), "TICK_60")
    assert not ev.subscribed(frozenset({"EVENT"}), "ARBITER_WORKER_BOOTED")
    assert ev.subscribed(frozenset({"ARBITER"}), "ARBITER_RELOAD_FAILED")
    assert not ev.subscribed(frozenset({"TICK_5"}), "TICK_60")


def test_unknown_event_names_are_refused_by_name() -> None:
    assert ev.check_names(["process_state", " TICK_5"]) == {"PROCESS_STATE", "TICK_5"}
    with pytest.raises(ValueError, match="PROCESS_STAT'"):
        ev.check_names(["PROCESS_STAT"])


def test_process_state_payloads_carry_supervisors_fields() -> None:
    assert ev.process_state("EXITED", "web", "web", "RUNNING", expected=False, pid=42).payload == \
        "processname:web groupname:web from_state:RUNNING expected:0 pid:42"
    assert ev.process_state("BACKOFF", "w", "g", "STARTING", tries=2).payload == \
        "processname:w groupname:g from_state:STARTING tries:2"
    assert ev.process_state("FATAL", "w", "g", "BACKOFF").payload == "processname:w groupname:g from_state:BACKOFF"


def test_ticks_fire_on_wall_clock_boundaries_never_for_the_first_slice() -> None:
    last: dict[str, int] = {}
    assert ev.due_ticks(last, 1003.0) == []
    assert ev.due_ticks(last, 1004.9) == []
    fired = ev.due_ticks(last, 1005.1)
    assert [(e.name, e.payload) for e in fired] == [("TICK_5", "when:1005")]
    fired = ev.due_ticks(last, 1020.0)  # TICK_60's slice began at 960 and now at 1020
    assert [(e.name, e.payload) for e in fired] == [("TICK_5", "when:1020"), ("TICK_60", "when:1020")]


def _listener_side(envelope: bytes) -> tuple[dict[str, str], str]:
    """What a real childutils listener reads from the envelope we send."""
    stdin = io.StringIO(envelope.decode("utf-8"))
    stdout = io.StringIO()
    headers, payload = childutils.listener.wait(stdin, stdout)
    assert stdout.getvalue() == "READY\n"
    return headers, payload


def test_envelope_is_read_by_childutils_with_len_in_characters() -> None:
    bus = EventBus()
    pool = bus.pools["mail"] = EventPool("mail", frozenset({"PROCESS_LOG"}), server="arbiter")
    bus.publish(ev.process_log("stdout", "web", "web", 7, "héllo\n".encode()))
    [(who, data)] = pool.dispatch(["mail_00"])
    headers, payload = _listener_side(data)
    assert who == "mail_00"
    assert headers == {"ver": "3.0", "server": "arbiter", "serial": "0", "pool": "mail", "poolserial": "0",
                       "eventname": "PROCESS_LOG_STDOUT", "len": str(len(payload))}
    assert payload == "processname:web groupname:web pid:7 channel:stdout\nhéllo\n"


def _answer(result: str) -> bytes:
    out = io.StringIO()
    childutils.listener.send(result, out)
    return out.getvalue().encode()


def test_protocol_cycle_with_childutils_answers() -> None:
    proto = ListenerProtocol()
    assert proto.feed(b"REA", default_handler) == []
    assert [o.kind for o in proto.feed(b"DY\n", default_handler)] == ["ready"]
    proto.sent()
    outcomes = proto.feed(_answer("OK") + b"READY\n", default_handler)
    assert [o.kind for o in outcomes] == ["done", "ready"]
    proto.sent()
    assert [o.kind for o in proto.feed(_answer("FAIL"), default_handler)] == ["rejected"]
    assert proto.state is ListenerState.ACKNOWLEDGED


@pytest.mark.parametrize("junk", [b"HELLO\n", b"RESULT x\nOK", b"garbage without newline" * 4])
def test_protocol_violations_leave_the_listener_unknown(junk: bytes) -> None:
    proto = ListenerProtocol()
    proto.feed(b"READY\n", default_handler)
    proto.sent()
    outcomes = proto.feed(junk, default_handler)
    assert outcomes[-1].kind == "violation" and "rejected" in outcomes[-1].detail
    assert proto.state is ListenerState.UNKNOWN
    assert proto.feed(b"READY\n", default_handler) == []  # ignored until restarted
    proto.restart()
    assert [o.kind for o in proto.feed(b"READY\n", default_handler)] == ["ready"]


def test_spurious_output_while_ready_is_a_violation_and_a_failing_handler_too() -> None:
    proto = ListenerProtocol()
    proto.feed(b"READY\n", default_handler)
    assert proto.feed(b"x", default_handler)[0].kind == "violation"
    proto.restart()
    proto.feed(b"READY\n", default_handler)
    proto.sent()
    assert proto.feed(b"RESULT 2\nOK", lambda _: Verdict.ERROR)[0].kind == "violation"


def test_rejected_event_goes_back_to_the_head_with_its_serials() -> None:
    bus = EventBus()
    pool = bus.pools["p"] = EventPool("p", frozenset({"TICK"}), buffer_size=5)
    for when in (5, 10, 15):
        bus.publish(ev.tick("TICK_5", when))
    [(_, first)] = pool.dispatch(["l0"])
    assert pool.send_again("l0") is None
    [(_, again)] = pool.dispatch(["l0"])
    assert again == first  # same serial, same poolserial, same payload
    pool.done("l0")
    sent = pool.dispatch(["l0", "l1"])
    assert [_listener_side(data)[0]["serial"] for _, data in sent] == ["1", "2"]


def test_a_full_buffer_drops_the_oldest_and_says_so() -> None:
    bus = EventBus()
    pool = bus.pools["p"] = EventPool("p", frozenset({"TICK_5"}), buffer_size=2)
    lines = [line for when in (5, 10, 15) for line in bus.publish(ev.tick("TICK_5", when))]
    assert lines == ["pool p event buffer overflowed, discarding event 0"]
    assert [e.payload for e in pool.buffer] == ["when:10", "when:15"]


def test_only_interested_pools_get_events_and_serials_count_published_events() -> None:
    bus = EventBus()
    ticks = bus.pools["t"] = EventPool("t", frozenset({"TICK"}))
    states = bus.pools["s"] = EventPool("s", frozenset({"PROCESS_STATE"}))
    bus.publish(ev.tick("TICK_5", 5))
    bus.publish(ev.process_state("RUNNING", "a", "a", "STARTING", pid=3))
    bus.publish(ev.arbiter_event("ARBITER_WORKER_BOOTED", pid=9))  # nobody subscribed
    assert [e.serial for e in ticks.buffer] == [0]
    assert [e.serial for e in states.buffer] == [1]
