"""An event listener (Supervisor's protocol, standard library only): it logs each event it is sent.

Run by `arbiter -c examples/supervisord.conf` (or by supervisord itself). The protocol: write
READY, read one header line and a payload of `len` bytes, answer RESULT 2 OK. Its stdout is the
protocol, so what it reports goes to stderr, which Arbiter captures like any program's output
(`arbiter ctl tail watcher stderr`).
"""

import sys


def main() -> None:
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        header = dict(token.split(":", 1) for token in sys.stdin.readline().split())
        payload = sys.stdin.read(int(header["len"]))
        print(f"{header['eventname']} {payload}", file=sys.stderr, flush=True)
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
