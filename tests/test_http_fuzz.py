"""Fuzzing the WSGI HTTP layer with hypothesis: no input raises anything but a RequestError.

In-process, no sockets to a server: bytes go to a real `Connection`'s parser (fed whole or cut
at random points), then every request it queued goes through `build_environ` and has its body
read through `wsgi.input`, as a worker would. The properties:

- nothing raises except `RequestError` (answered with its 4xx/5xx status) and
  `ClientDisconnected` (the client's end is closed here, so an unfinished body ends that way);
- no refusal comes from an exception no check meant to raise (`RequestError.__cause__`);
- a valid request parses to the same thing however its bytes are cut into reads.

Runs in a few seconds; `ARBITER_FUZZ_EXAMPLES=20000` makes a longer hunt. No example database
is written (`database=None`): what a run finds is printed, and goes into `fuzz_corpus.py`,
which is replayed on every run, in-process and against a real sync worker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fuzz_corpus import FUZZ_CORPUS
from http_corpus import LLHTTP_REFUSES, WRAPPER_REFUSES
from http_helpers import Client, app, get, serve
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from arbiter.web.http.body import Body
from arbiter.web.http.connection import Connection, ListenerInfo
from arbiter.web.http.environ import Trust, base_environ, build_environ
from arbiter.web.http.errors import ClientDisconnected, RequestError
from arbiter.web.http.parser import Limits, Request

EXAMPLES = int(os.environ.get("ARBITER_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Small limits, so that the limit checks are reached by inputs of fuzzing size too.
SMALL = Limits(request_line=200, fields=8, field_size=120)

VALID = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p/a%20th?q=1&r=%2F HTTP/1.1\r\nHost: a\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Checksum: 1\r\n\r\n",
    b"GET http://example.com:8080/abs?x=y HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz",
    b"GET /app/proxied HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1, 203.0.113.9\r\n"
    b"X-Forwarded-Proto: https\r\nSCRIPT_NAME: /app\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
]
# Pieces that make parsers stumble, for insertion and for replacing a request's target.
TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xff", b"[", b"]", b"://", b"%", b"%zz",
    b"?", b"#", b"*", b";", b",", b"/", b"//", b"0", b"-1", b"ffffffffffffffff", b"HTTP/1.1", b"HTTP/2.0",
    b"Host: b\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n", b"Content-Type: x\r\n", b"Expect: 100-continue\r\n", b"0\r\n\r\n",
    b"Connection: close\r\n", b"Upgrade: h2c\r\n", b"X-Forwarded-For: [::1\r\n", b"SCRIPT_NAME: /\r\n",
]
URL_BYTES = [bytes([c]) for c in b"[]@:%#?!/.;=&+$,~*'()"]
ODD_TARGETS = [
    b"*", b"*x", b"http://[::1/x", b"http://[", b"s://]ufd/:", b"x://a]b/", b"http://a:b:c/", b"http://[::1]:99999/",
    b"//", b"/%", b"/%00", b"/..%2f..", b"http://", b"a:1", b"http://a/#frag", b"/?#", b"/" + b"a" * 300,
    b"HTTP://A/", b"http://user:pw@host/p", b"http://[v1.x]/", b"http://[::ffff:1.2.3.4]/",
]


# -- what a worker does with the bytes, in-process --------------------------------------------------


@contextmanager
def connection(limits: Limits) -> Iterator[Connection]:
    """A real Connection whose client has closed its end: reads past the data given end in EOF."""
    ours, theirs = socket.socketpair()
    theirs.close()
    ours.setblocking(False)
    listener = ListenerInfo(ours, "127.0.0.1", "8000", False)
    conn = Connection(ours, ("127.0.0.1", 40000), listener, limits, io_timeout=1.0, trusted=True)
    try:
        yield conn
    finally:
        conn.close()


def _base() -> dict[str, object]:
    with socket.socket() as unbound:  # base_environ reads only the name and port
        return base_environ(ListenerInfo(unbound, "127.0.0.1", "8000", False), "http", False, object)


BASE = _base()
TRUST = Trust(("*",))  # every proxy header is applied: the most code runs


def check(err: RequestError) -> int:
    assert 400 <= err.status < 600, err
    assert err.__cause__ is None, f"refused by an unexpected exception: {err.__cause__!r}"
    return err.status


def run(chunks: list[bytes], limits: Limits = SMALL) -> list[tuple[object, ...]]:
    """Feed `chunks`, then serve what was queued as far as the HTTP layer goes; a summary."""
    summary: list[tuple[object, ...]] = []
    with connection(limits) as conn:
        parser = conn.parser
        for chunk in chunks:
            parser.feed(chunk)
        while parser.ready:
            req = parser.ready.popleft()
            summary.append(_serve(conn, req))
        if parser.error is not None:
            summary.append(("error", check(parser.error)))
    return summary


def _serve(conn: Connection, req: Request) -> tuple[object, ...]:
    try:
        environ = build_environ(BASE, conn, req, TRUST)
        body = Body(req, conn).read()
        Body(req, conn).readline()
    except RequestError as err:
        return ("refused", req.method, req.uri, check(err))
    except ClientDisconnected:
        return ("cut off", req.method, req.uri)
    assert isinstance(environ["PATH_INFO"], str) and isinstance(environ["QUERY_STRING"], str)
    return ("served", req.method, req.uri, tuple(req.headers), body, environ["PATH_INFO"])


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a] or [data]


# -- mutations --------------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "token", "delete", "duplicate", "target", "case"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            at %= len(data)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 1))
                lines.insert(i, lines[i])
                data = bytearray(b"\r\n".join(lines))
        elif kind == "target":
            method, sp, rest = bytes(data).partition(b" ")
            target, sp2, tail = rest.partition(b" ")
            if draw(st.booleans()):
                target = draw(st.sampled_from(ODD_TARGETS) | st.binary(max_size=12))
            else:  # one URL delimiter somewhere in the target the request had
                i = draw(st.integers(0, len(target)))
                target = target[:i] + draw(st.sampled_from(URL_BYTES)) + target[i:]
            data = bytearray(method + sp + target + sp2 + tail)
        elif kind == "case" and data:
            at %= len(data)
            data[at:at + 8] = bytes(data[at:at + 8]).swapcase()
    return bytes(data)


SPLITS = st.lists(st.integers(0, 1 << 16), max_size=6)
# The request target is the part of a head interpreted most (forms, authority, path, query).
TARGETS = st.builds(
    bytes.__add__,
    st.sampled_from([b"/", b"//", b"http://", b"https://", b"x://", b"*", b""]),
    st.lists(st.sampled_from(URL_BYTES + [b"a", b"Z", b"0", b"v", b"-", b"_", b"%2F", b"::1"]), max_size=16)
    .map(b"".join),
)


# -- the properties ---------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600), SPLITS)
def test_arbitrary_bytes_never_raise(data: bytes, points: list[int]) -> None:
    run(cut(data, points))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.binary(max_size=6), max_size=40), SPLITS)
def test_streams_of_protocol_pieces_never_raise(pieces: list[bytes], points: list[int]) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(pieces)
    run(cut(data, points))


@FUZZ
@given(st.sampled_from([b"GET", b"OPTIONS", b"CONNECT", b"POST", b"HEAD"]), TARGETS, SPLITS)
def test_odd_request_targets_never_raise(method: bytes, target: bytes, points: list[int]) -> None:
    run(cut(method + b" " + target + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", points))


def _corpus_examples(test):  # type: ignore[no-untyped-def]
    """Every input that once broke something is tried first, in every run."""
    for data in [*FUZZ_CORPUS.values(), *LLHTTP_REFUSES.values(), *(d for d, _ in WRAPPER_REFUSES.values())]:
        test = example(data, [])(test)
        test = example(data, [1, len(data) // 2])(test)
    return test


@FUZZ
@_corpus_examples
@given(mutated(), SPLITS)
def test_mutated_requests_never_raise_and_parse_the_same_however_cut(data: bytes, points: list[int]) -> None:
    whole = run([data])
    pieces = run(cut(data, points))
    # Where a refused request began is not always known when the bytes come in one read (a
    # method after pipelined requests: 400, where single reads can tell a 501), so only what
    # was served, and whether something was refused, must not depend on the cuts.
    assert [s for s in pieces if s[0] != "error"] == [s for s in whole if s[0] != "error"]
    assert any(s[0] == "error" for s in pieces) == any(s[0] == "error" for s in whole)


@FUZZ
@given(st.sampled_from(VALID), SPLITS)
def test_valid_requests_are_served_whole_however_cut(data: bytes, points: list[int]) -> None:
    whole = run([data], Limits())
    assert whole and all(s[0] == "served" for s in whole), whole
    assert run(cut(data, points), Limits()) == whole


@pytest.mark.parametrize("name", sorted(FUZZ_CORPUS))
def test_fuzz_corpus_is_refused_in_process(name: str) -> None:
    summary = run([FUZZ_CORPUS[name]], Limits())
    assert summary and summary[-1][0] in ("error", "refused"), summary


def test_fuzz_corpus_end_to_end_against_a_real_sync_worker() -> None:
    """Every corpus input on its own connection to one real worker: each is answered with a
    4xx/5xx or just closed, the worker survives them all, and then still serves."""
    with serve(app, "sync") as worker:
        for name, data in FUZZ_CORPUS.items():
            with worker.connect() as sock:
                client = Client(sock)
                client.send(data)
                reply = client.read_response()
                assert 400 <= reply.status < 600, (name, reply)
                assert client.at_eof()
            assert not worker.exited(), name
        assert get(worker).body == b"hello"
