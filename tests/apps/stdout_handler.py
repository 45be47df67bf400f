"""supervisor_stdout's listener and result handler (pypi supervisor-stdout 0.1.1 is Python 2
only), ported to Python 3 as Supervisor 4 calls it: the listener echoes each event back as its
result, and the handler, called in the master with (event, result bytes), prints it there."""

import sys


def main() -> None:
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        headers = dict(x.split(":") for x in line.split())
        data = sys.stdin.read(int(headers["len"]))
        sys.stdout.write(f"RESULT {len(data.encode('utf-8'))}\n{data}")
        sys.stdout.flush()


def event_handler(event, response):
    line, data = response.decode("utf-8").split("\n", 1)
    headers = dict(x.split(":") for x in line.split())
    prefix = f"{headers['processname']} {headers['channel']} | "
    print("\n".join(prefix + text for text in data.split("\n") if text), flush=True)


if __name__ == "__main__":
    main()
