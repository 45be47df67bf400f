"""An event listener for the tests, speaking Supervisor's protocol by hand (no childutils).

Each event it handles is appended to OUT as one JSON line: its headers, its payload, the pid
and process name of this listener, and what it answered. Options:
  --reject TYPE   answer FAIL the first time an event of TYPE arrives (it must come again)
  --delay S       take S seconds per event (so a pool of two shares a burst)
  --stall-after N after N events, say READY and then never read stdin again
  --hold WORD:PATH  an event whose payload holds WORD is answered only once PATH exists
"""

import json
import os
import sys
import time


def main() -> None:
    args = sys.argv[1:]
    out = args.pop(0)
    reject, delay, stall_after, hold = None, 0.0, None, None
    while args:
        flag, value = args.pop(0), args.pop(0)
        if flag == "--reject":
            reject = value
        elif flag == "--delay":
            delay = float(value)
        elif flag == "--stall-after":
            stall_after = int(value)
        elif flag == "--hold":
            hold = value.split(":", 1)
    handled = 0
    stdin, stdout = sys.stdin, sys.stdout  # text: `len` counts characters, as Supervisor sends
    while True:
        stdout.write("READY\n")
        stdout.flush()
        if stall_after is not None and handled >= stall_after:
            time.sleep(3600)  # READY, and never reads what it is sent
        line = stdin.readline()
        if not line:
            return
        headers = dict(field.split(":", 1) for field in line.split())
        payload = stdin.read(int(headers["len"]))
        answer = "OK"
        if reject is not None and headers["eventname"] == reject:
            reject, answer = None, "FAIL"
        if delay:
            time.sleep(delay)
        while hold is not None and hold[0] in payload and not os.path.exists(hold[1]):
            time.sleep(0.02)
        record = {"listener": os.environ.get("SUPERVISOR_PROCESS_NAME"), "pid": os.getpid(),
                  "headers": headers, "payload": payload, "answer": answer,
                  "server_url": os.environ.get("SUPERVISOR_SERVER_URL"),
                  "enabled": os.environ.get("SUPERVISOR_ENABLED"),
                  "group": os.environ.get("SUPERVISOR_GROUP_NAME")}
        with open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        stdout.write(f"RESULT {len(answer)}\n{answer}")
        stdout.flush()
        handled += 1


if __name__ == "__main__":
    main()
