"""Event listeners' configuration, capture mode and the state events, without a master; and a
result_handler called in a real master, as supervisor_stdout's is."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import APPS

from arbiter.errors import ConfigError
from arbiter.programs import ini
from arbiter.programs import states as st
from arbiter.programs.comm import Capture
from arbiter.programs.config import programs_from_mapping
from arbiter.programs.state_events import Change, changes

S = st.ProcessStates
PY = sys.executable


def load(tmp_path: Path, body: str) -> ini.IniResult:
    conf = tmp_path / "supervisord.conf"
    conf.write_text("[supervisord]\n" + textwrap.dedent(body))
    return ini.load(str(conf))


def test_an_eventlistener_section_has_supervisors_keys_and_defaults(tmp_path):
    result = load(tmp_path, """
        [eventlistener:watch]
        command=python3 -c pass
        events=PROCESS_STATE, tick_60
        numprocs=2
        process_name=%(program_name)s_%(process_num)s
    """)
    (program,) = result.programs
    assert program.listener is not None
    assert program.listener.events == frozenset({"PROCESS_STATE", "TICK_60"})
    assert (program.listener.buffer_size, program.priority, program.numprocs) == (10, -1, 2)
    assert result.warnings == []


def test_a_listeners_stdout_logfile_is_named_as_unused(tmp_path):
    result = load(tmp_path, "[eventlistener:w]\ncommand=x\nevents=TICK_5\nstdout_logfile=/tmp/w.log\n")
    assert len(result.warnings) == 1 and "[eventlistener:w] stdout_logfile: an event listener's stdout is" \
        in result.warnings[0]


@pytest.mark.parametrize(("body", "message"), [
    ("command=x\n", r"supervisord.conf:2: \[eventlistener:w\]: an event listener needs an 'events' line"),
    ("command=x\nevents=PROCESS_STATE,NOPE\n", r"\[eventlistener:w\] events = .*unknown: 'NOPE'"),
    ("command=x\nevents=TICK_5\nredirect_stderr=true\n", r"\[eventlistener:w\] redirect_stderr: .*not allowed"),
    ("command=x\nevents=TICK_5\nbuffer_size=0\n", r"\[eventlistener:w\] buffer_size = '0': expected"),
    ("command=x\nevents=TICK_5\nresult_handler=no_such_module:f\n",
     r"\[eventlistener:w\] result_handler = 'no_such_module:f': expected a result handler"),
])
def test_a_bad_eventlistener_section_is_refused_naming_file_line_and_key(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, "[eventlistener:w]\n" + body)


def test_toml_eventlisteners_tables(tmp_path):
    path = tmp_path / "arbiter.toml"
    data = {"eventlisteners": {"watch": {"command": ["python3", "-c", "pass"], "events": ["TICK_5"],
                                         "buffer_size": 50}}}
    path.write_text('[eventlisteners.watch]\ncommand = ["python3", "-c", "pass"]\nevents = ["TICK_5"]\n')
    (program,), _ = programs_from_mapping(data, str(path))
    assert program.listener is not None and program.listener.buffer_size == 50
    with pytest.raises(ConfigError, match=r"arbiter.toml:3: \[eventlisteners.watch\] events"):
        programs_from_mapping({"eventlisteners": {"watch": {"command": "x", "events": "BAD"}}}, str(path))


def test_capture_mode_splits_tokens_across_reads_and_keeps_the_last_maxbytes():
    capture = Capture(maxbytes=5)
    log, done = capture.feed(b"before <!--XSUPER")
    assert (log, done) == (b"before ", [])
    log, done = capture.feed(b"VISOR:BEGIN-->0123456789<!--XSUPERVISOR:E")
    assert (log, done) == (b"", [])
    log, done = capture.feed(b"ND-->after <!-- not a token -->")
    assert (log, done) == (b"after <!-- not a token -->", [b"56789"])
    assert capture.feed(b"<!--XSUPERVISOR:BEGIN-->a<!--XSUPERVISOR:END--><!--XSUPERVISOR:BEGIN-->b"
                        b"<!--XSUPERVISOR:END-->\n") == (b"\n", [b"a", b"b"])


RULES = st.Rules(name="p", startsecs=1, startretries=1, exitcodes=frozenset({0}))


def test_one_transition_names_each_state_it_passes_through():
    running = st.ProcessRecord(state=S.RUNNING, pid=42, laststart=0.0)
    # RUNNING -> EXITED -> STARTING (autorestart=unexpected, exit 3)
    after, _ = st.transition(running, st.Exited(3 << 8), 10.0, RULES)
    assert changes(running, after, st.Exited(3 << 8), RULES) == [
        Change(S.EXITED, S.RUNNING, expected=False, pid=42), Change(S.STARTING, S.EXITED, tries=0)]
    # STARTING (past startsecs, not yet promoted) -> RUNNING -> EXITED, expected
    starting = st.ProcessRecord(state=S.STARTING, pid=42, laststart=0.0)
    after, _ = st.transition(starting, st.Exited(0), 10.0, RULES)
    assert changes(starting, after, st.Exited(0), RULES) == [
        Change(S.RUNNING, S.STARTING, pid=42), Change(S.EXITED, S.RUNNING, expected=True, pid=42)]
    # STARTING -> BACKOFF -> FATAL once the retries are spent
    spent = st.ProcessRecord(state=S.STARTING, pid=42, laststart=0.0, backoff=1)
    after, _ = st.transition(spent, st.Exited(1 << 8), 0.5, RULES)
    assert changes(spent, after, st.Exited(1 << 8), RULES) == [
        Change(S.BACKOFF, S.STARTING, tries=2), Change(S.FATAL, S.BACKOFF)]
    # STOPPING -> STOPPED -> STARTING (a restart)
    stopping = st.ProcessRecord(state=S.STOPPING, pid=42, laststart=0.0, restart_pending=True)
    after, _ = st.transition(stopping, st.Exited(15), 10.0, RULES)
    assert changes(stopping, after, st.Exited(15), RULES) == [
        Change(S.STOPPED, S.STOPPING, pid=42), Change(S.STARTING, S.STOPPED, tries=0)]


def test_a_result_handler_is_called_in_the_master_as_supervisor_stdouts_is(arbiter, tmp_path):
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [supervisord]

        [program:talker]
        command={PY} -u -c "import time; print('one'); print('two'); time.sleep(600)"
        startsecs=0
        stdout_events_enabled=true

        [eventlistener:stdout]
        command={PY} {APPS / "stdout_handler.py"}
        events=PROCESS_LOG
        result_handler=stdout_handler:event_handler
        buffer_size=100
    """))
    master = arbiter(["-c", str(conf)], bind=False)
    master.wait_log(r"talker stdout \| one\n(.|\n)*talker stdout \| two\n")
    master.signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0
