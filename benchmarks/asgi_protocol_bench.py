"""CPU per request in the uvicorn worker's HTTP protocol: uvicorn's own against Arbiter's subclass.

    python3 benchmarks/asgi_protocol_bench.py              # 5 rounds x 20,000 requests each
    python3 benchmarks/asgi_protocol_bench.py --quick      # 1 round x 2,000

`arbiter.web.workers.asgi_http.LimitedHttpToolsProtocol` adds request limits and refusals to
uvicorn's `HttpToolsProtocol`. This measures what that costs per request, on the CPU of this
process (`time.process_time`, so other work on a shared machine moves the figure much less than it
moves a wrk run): a keep-alive GET with a browser's dozen headers goes through `data_received`,
llhttp, the ASGI cycle and a hello-world app, on a uvloop loop, to a transport that only counts
the bytes written (no socket: the system calls are the same for both and would only hide the
difference). The two protocols run in alternating rounds; the report gives medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from arbiter.web.http.parser import Limits  # noqa: E402
from arbiter.web.workers.asgi_http import protocol_class  # noqa: E402

REQUEST = (
    b"GET /api/items?page=2&sort=name HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://shop.example.com/api/items?page=1\r\n"
    b"Cookie: session=4f1c2a9e0b7d4c36a2f1e8d9c0b1a2f3; theme=dark; consent=yes\r\n"
    b"Connection: keep-alive\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"\r\n"
)
BODY = b"Hello, world!"


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": BODY})


class CountingTransport(asyncio.Transport):
    """Accepts what the protocol writes and counts it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def run(cls: type[Any], loop: asyncio.AbstractEventLoop, requests: int) -> float:
    """CPU seconds per request for `requests` keep-alive requests through one `cls` connection."""
    config = uvicorn.Config(app, http=cls, lifespan="off", log_config=None, access_log=False)
    config.load()
    state = ServerState()
    transport = CountingTransport()

    async def serve() -> None:
        protocol = cls(config=config, server_state=state, app_state={}, _loop=loop)
        protocol.connection_made(transport)
        for _ in range(requests):
            protocol.data_received(REQUEST)
            for task in list(state.tasks):
                await task
        assert not transport.closed, "the connection was closed: a request was refused"
        protocol.connection_lost(None)

    started = time.process_time()
    loop.run_until_complete(serve())
    elapsed = time.process_time() - started
    assert state.total_requests == requests and transport.written > requests * len(BODY)
    return elapsed / requests


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2,000 requests")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 1, 2000
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    contenders: dict[str, type[Any]] = {
        "uvicorn HttpToolsProtocol": HttpToolsProtocol,
        "arbiter LimitedHttpToolsProtocol (default limits)": protocol_class(Limits()),
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for cls in contenders.values():  # warm-up, not counted
            run(cls, loop, min(args.requests, 2000))
        for round_ in range(1, args.rounds + 1):
            for name, cls in contenders.items():
                per_request = run(cls, loop, args.requests)
                results[name].append(per_request)
                print(f"  round {round_}/{args.rounds}  {name:<52} {per_request * 1e6:7.2f} us CPU/request",
                      file=sys.stderr)
    finally:
        loop.close()
    peer = statistics.median(results["uvicorn HttpToolsProtocol"])
    print(f"{'protocol':<52} {'median us/request':>18} {'requests/s of CPU':>18}  vs uvicorn")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<52} {median * 1e6:18.2f} {1 / median:18,.0f}  {median / peer:.3f}x CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
