"""What a master imports: a programs-only master (Arbiter as a supervisord) loads no web stack
and no XML-RPC client library; its start is part of how soon its programs run."""

from __future__ import annotations

import re
import signal
import textwrap
from pathlib import Path

IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.M)
WEB_STACK = {"uvicorn", "uvloop", "httptools", "fastapi", "starlette", "websockets", "gunicorn"}


def test_a_programs_only_master_never_imports_the_web_stack(arbiter, tmp_path: Path) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text(textwrap.dedent('''
        [programs.sleeper]
        command = ["sleep", "600"]
        startsecs = 0
    '''))
    # PYTHONPROFILEIMPORTTIME: the interpreter itself lists every module the master imports.
    master = arbiter(["-c", str(path)], bind=False, env={"PYTHONPROFILEIMPORTTIME": "1"})
    master.wait_log(r"success: sleeper entered RUNNING state")
    master.signal(signal.SIGTERM)
    assert master.wait_exit(20) == 0
    imported = set(IMPORTED.findall(master.log()))
    assert "arbiter.programs.manager" in imported and "arbiter.control.server" in imported  # the list is real
    assert {name for name in imported if name.split(".")[0] in WEB_STACK} == set()
    assert not imported & {"arbiter.web.workers.asgi", "arbiter.web.workers.sync", "xmlrpc.client"}
