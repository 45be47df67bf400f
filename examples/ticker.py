"""An example program for Arbiter to supervise beside the web app: it ticks once a second."""

import os
import time

print(f"ticker started, pid {os.getpid()}, APP_ENV={os.environ.get('APP_ENV', '')}", flush=True)
n = 0
while True:
    print(f"tick {n}", flush=True)
    n += 1
    time.sleep(1)
