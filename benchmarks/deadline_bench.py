"""The cost of `--request-timeout`: the same Arbiter with the deadline off and on, side by side.

    python3 benchmarks/deadline_bench.py              # 3 rounds x 5 s per server and worker class
    python3 benchmarks/deadline_bench.py --quick      # smoke test

Runs http_bench.py's harness (2 workers, `wrk -t2 -c64`, alternating rounds, medians) on
scenarios of its own: for each worker class, Arbiter without a deadline is the "peer" and
Arbiter with `--request-timeout 30` (never reached by a hello-world request) the one measured,
so the ratio column reads "with the deadline / without", target >= 0.97 (issue 12: within 3%).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# The servers run this checkout's arbiter, not whichever one is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
import http_bench as hb  # noqa: E402


def pair(app: str, *opts: str) -> list[hb.Contender]:
    opts = (*opts, "--control-socket", "none")  # two masters at once: not both on ./arbiter.sock
    off = hb.arbiter(app, *opts)
    off.label, off.arbiter = f"{off.label} (no deadline)", False  # the baseline plays the peer
    return [hb.arbiter(app, *opts, "--request-timeout", "30"), off]


hb.SCENARIOS.clear()
hb.SCENARIOS.update({
    "deadline-sync": (pair("wsgi_hello:app", "-k", "sync"), 0.97),
    "deadline-gth": (pair("wsgi_hello:app", "-k", "gthread", "--threads", "4"), 0.97),
    "deadline-asgi": (pair("asgi_hello:app", "-k", "uvicorn"), 0.97),
    "deadline-gevent": (pair("wsgi_hello:app", "-k", "gevent"), 0.97),
})
hb.REPLACEMENT.clear()

if __name__ == "__main__":
    sys.exit(hb.main())
