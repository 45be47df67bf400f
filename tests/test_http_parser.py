"""The request parser: what llhttp refuses by itself, what our wrapper adds, and the environ.

These are in-process unit tests of `arbiter.web.http.parser` / `arbiter.web.http.environ` (no sockets);
the same cases are checked end to end against a real worker in `test_wsgi_worker.py`.
"""

from __future__ import annotations

import httptools
import pytest
from http_corpus import LLHTTP_REFUSES, LLHTTP_STATUS, WRAPPER_REFUSES

from arbiter.web.http.environ import Trust, _client_from_forwarded_for
from arbiter.web.http.errors import RequestError
from arbiter.web.http.parser import READ_SLACK, Limits, RequestParser


def parse(data: bytes, limits: Limits | None = None, step: int = 0) -> RequestParser:
    parser = RequestParser(limits or Limits())
    if step:
        for start in range(0, len(data), step):
            parser.feed(data[start:start + step])
    else:
        parser.feed(data)
    return parser


def error_of(data: bytes, limits: Limits | None = None) -> RequestError:
    parser = parse(data, limits)
    assert parser.error is not None, f"accepted: {data!r}"
    assert not parser.ready
    return parser.error


def refusal_of(data: bytes) -> RequestError:
    """The error of a refused request: of its head, or of its body (a chunk, a trailer)."""
    parser = parse(data)
    if parser.error is not None:
        assert not parser.ready
        return parser.error
    assert len(parser.ready) == 1 and parser.ready[0].error is not None, f"accepted: {data!r}"
    assert parser.closed and not parser.ready[0].complete
    return parser.ready[0].error


def raw_llhttp_accepts(data: bytes) -> bool:
    """What httptools does with no wrapper at all (documents the division of labour)."""
    class Sink:
        pass
    try:
        httptools.HttpRequestParser(Sink()).feed_data(data)
    except httptools.HttpParserUpgrade:
        return True
    except httptools.HttpParserError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(LLHTTP_REFUSES))
def test_llhttp_refuses_by_itself_and_we_answer_4xx(name: str) -> None:
    data = LLHTTP_REFUSES[name]
    assert not raw_llhttp_accepts(data)
    status = refusal_of(data).status
    assert status == LLHTTP_STATUS[name] if name in LLHTTP_STATUS else 400 <= status < 600


@pytest.mark.parametrize("name", sorted(WRAPPER_REFUSES))
def test_wrapper_refuses_what_llhttp_accepts(name: str) -> None:
    data, status = WRAPPER_REFUSES[name]
    assert raw_llhttp_accepts(data)
    assert refusal_of(data).status == status


# -- limits ----------------------------------------------------------------------------------------


def test_request_line_limit_gives_414_even_when_fed_byte_by_byte() -> None:
    line = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n"
    assert error_of(line, Limits(request_line=50)).status == 414
    parser = parse(line, Limits(request_line=50), step=1)
    assert parser.error is not None and parser.error.status == 414


def test_request_line_exactly_at_limit_is_accepted() -> None:
    target = b"/" + b"a" * 20
    line = b"GET " + target + b" HTTP/1.1"
    assert parse(line + b"\r\n\r\n", Limits(request_line=len(line))).ready
    assert error_of(line + b"\r\n\r\n", Limits(request_line=len(line) - 1)).status == 414


def test_too_many_header_fields_gives_431() -> None:
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(11)) + b"\r\n"
    assert error_of(head, Limits(fields=10)).status == 431
    assert parse(head, Limits(fields=11)).ready


def test_header_field_too_large_gives_431() -> None:
    head = b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 200 + b"\r\n\r\n"
    assert error_of(head, Limits(field_size=100)).status == 431
    assert parse(head, Limits(field_size=300)).ready


def test_header_field_counts_its_line_with_the_crlf_as_gunicorn() -> None:
    # Gunicorn: len("X-Big: vvv") + len("\r\n") > limit_request_field_size is refused.
    def head(n: int) -> bytes:
        return b"GET / HTTP/1.1\r\nX-Big: " + b"v" * n + b"\r\n\r\n"

    limit = 100
    exact = len(b"X-Big: \r\n")
    assert parse(head(limit - exact), Limits(field_size=limit)).ready
    assert error_of(head(limit - exact + 1), Limits(field_size=limit)).status == 431


def test_request_line_limit_above_8190_is_8190_as_gunicorn() -> None:
    line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"
    assert Limits(request_line=20000).line_limit == 8190
    assert error_of(line, Limits(request_line=20000)).status == 414


def test_zero_limits_mean_what_they_mean_to_gunicorn() -> None:
    limits = Limits(request_line=0, fields=0, field_size=0)
    # request line 0: no limit of its own; fields 0: Gunicorn's ceiling of 32768; field size 0:
    # no single field is checked...
    assert (limits.line_limit, limits.max_fields, limits.field_limit) == (0, 32768, 0)
    head = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n"
    parser = parse(head, limits)
    assert parser.error is None and parser.ready


def test_field_size_zero_still_bounds_the_head_as_if_8190() -> None:
    # ...but the head as a whole is bounded as if each field could take Gunicorn's default 8190
    # bytes (Gunicorn's max_buffer_headers); before, 0 turned every bound off.
    limits = Limits(request_line=100, fields=2, field_size=0)
    assert limits.head_bytes == 100 + 2 + 2 * (8190 + 2) + 2 + READ_SLACK
    parser = RequestParser(limits)
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(3):
        parser.feed(b"v" * 65536)
    assert parser.error is not None and parser.error.status == 431


def test_request_line_zero_is_still_bounded_in_memory() -> None:
    parser = RequestParser(Limits(request_line=0))
    parser.feed(b"GET /")
    while parser.error is None:
        assert parser.current is not None and len(parser.current.url) <= Limits(request_line=0).head_bytes
        parser.feed(b"a" * 65536)
    assert parser.error.status == 431


def test_incomplete_head_cannot_grow_without_bound() -> None:
    # A header value that never ends is buffered inside llhttp, out of the per-field check's
    # sight; the byte budget of the whole head catches it.
    limits = Limits(request_line=100, fields=2, field_size=100)
    parser = RequestParser(limits)
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(3):
        parser.feed(b"v" * 65536)
    assert parser.error is not None and parser.error.status == 431


# -- requests, pipelining and bodies --------------------------------------------------------------


def test_request_fields() -> None:
    parser = parse(b"GET /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Type: t\r\n\r\n")
    req = parser.ready[0]
    assert (req.method, req.uri, req.path, req.query) == ("GET", "/a%20b/c?x=1&y=%20", "/a%20b/c", "x=1&y=%20")
    assert req.version == (1, 1) and req.protocol == "HTTP/1.1" and req.keep_alive
    assert req.headers == [("HOST", "h"), ("X-A", "1"), ("X-A", "2"), ("CONTENT-TYPE", "t")]
    assert req.env == {"HTTP_HOST": "h", "HTTP_X_A": "1,2", "CONTENT_TYPE": "t"}


def test_header_with_underscore_is_dropped_from_environ_as_gunicorn() -> None:
    req = parse(b"GET / HTTP/1.1\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n").ready[0]
    assert "HTTP_X_FORWARDED_FOR" not in req.env
    assert ("X_FORWARDED_FOR", "6.6.6.6") in req.headers


def test_pipelined_requests_queue_in_order_with_bodies() -> None:
    parser = parse(
        b"POST /1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1;ext=1\r\nf\r\n0\r\nX-Checksum: t\r\n\r\n"
        b"GET /3 HTTP/1.1\r\n\r\n",
        step=5,
    )
    assert [r.path for r in parser.ready] == ["/1", "/2", "/3"]
    assert [bytes(r.body) for r in parser.ready] == [b"abc", b"def", b""]
    assert all(r.complete for r in parser.ready)
    assert parser.ready[1].chunked and parser.ready[1].headers == [("TRANSFER-ENCODING", "chunked")]


def test_keep_alive_rules() -> None:
    def keep(data: bytes) -> bool:
        return parse(data).ready[0].keep_alive

    assert keep(b"GET / HTTP/1.1\r\n\r\n")
    assert not keep(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert not keep(b"GET / HTTP/1.0\r\n\r\n")
    assert keep(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")


def test_error_after_a_good_request_keeps_the_good_one() -> None:
    parser = parse(b"GET /ok HTTP/1.1\r\n\r\nBAD!\r\n\r\n")
    assert [r.path for r in parser.ready] == ["/ok"]
    assert parser.error is not None and parser.error.status == 400


def test_bytes_after_connection_close_are_ignored() -> None:
    parser = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert len(parser.ready) == 1 and parser.error is None and parser.closed


@pytest.mark.parametrize("body", [b"3\r\nabcX\r\n", b"zz\r\nabc\r\n0\r\n\r\n"])
def test_bad_chunk_goes_to_the_request_not_the_connection(body: bytes) -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    assert not raw_llhttp_accepts(data)
    parser = parse(data)
    req = parser.ready[0]
    assert parser.error is None and parser.closed
    assert req.error is not None and req.error.status == 400


def test_expect_continue_only_for_http11() -> None:
    assert parse(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").ready[0].expect_continue
    assert not parse(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").ready[0].expect_continue


def test_absolute_and_asterisk_targets() -> None:
    req = parse(b"GET http://example.com/p/q?z=1 HTTP/1.1\r\n\r\n").ready[0]
    assert (req.path, req.query, req.uri) == ("/p/q", "z=1", "http://example.com/p/q?z=1")
    assert parse(b"OPTIONS * HTTP/1.1\r\n\r\n").ready[0].path == "*"


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT"])
def test_asterisk_target_is_for_options_only(method: bytes) -> None:
    assert error_of(method + b" * HTTP/1.1\r\n\r\n").status == 400


def test_connect_takes_host_and_port_only() -> None:
    assert parse(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").ready[0].path == "example.com:443"
    assert parse(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").ready[0].path == "[::1]:443"
    for target in (b"/x", b"example.com", b"http://a:1/"):
        assert error_of(b"CONNECT " + target + b" HTTP/1.1\r\n\r\n").status == 400


def test_legitimate_trailers_are_accepted_and_never_reach_the_headers() -> None:
    parser = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"1\r\na\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=5\r\n\r\n")
    [req] = parser.ready
    assert req.complete and req.error is None and bytes(req.body) == b"a"
    assert req.headers == [("HOST", "x"), ("TRANSFER-ENCODING", "chunked")]
    assert "HTTP_X_CHECKSUM" not in req.env


@pytest.mark.parametrize("data,status", [
    (b"FOO / HTTP/1.1\r\n\r\n", 501),
    (b"\r\nPURGEX / HTTP/1.1\r\n\r\n", 501),
    (b"GETX / HTTP/1.1\r\n\r\n", 501),  # llhttp: "Expected space after method"
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"GET( / HTTP/1.1\r\n\r\n", 400),
    (b"@@@ / HTTP/1.1\r\n\r\n", 400),
])
@pytest.mark.parametrize("step", [0, 1, 2])
def test_unknown_method_is_501_and_a_non_token_400_whatever_the_reads(data: bytes, status: int, step: int) -> None:
    parser = parse(data, step=step)
    assert parser.error is not None and parser.error.status == status


def test_unknown_method_after_pipelined_requests_is_refused_after_they_are_answered() -> None:
    parser = parse(b"GET /1 HTTP/1.1\r\n\r\nFOO /2 HTTP/1.1\r\n\r\n")
    assert [r.path for r in parser.ready] == ["/1"]
    # Where FOO began in that read is unknown to us, so it cannot be told from garbage: 400.
    assert parser.error is not None and parser.error.status == 400
    split = RequestParser(Limits())
    split.feed(b"GET /1 HTTP/1.1\r\n\r\n")
    split.feed(b"FOO /2 HTTP/1.1\r\n\r\n")
    assert split.error is not None and split.error.status == 501
    # A method begun right after a request in one read, and refused in the next read, is not
    # read from the first request's bytes.
    late = RequestParser(Limits())
    late.feed(b"GET /1 HTTP/1.1\r\n\r\nPU")
    late.feed(b"( /2 HTTP/1.1\r\n\r\n")
    assert late.error is not None and late.error.status == 400


def test_upgrade_request_is_served_then_parsing_stops() -> None:
    parser = parse(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nbinary junk")
    assert len(parser.ready) == 1 and parser.closed and parser.error is None
    assert not parser.ready[0].keep_alive


# -- proxy trust ------------------------------------------------------------------------------------


def test_trust_addresses_networks_and_unix() -> None:
    trust = Trust(("127.0.0.1", "10.0.0.0/8", "::1"))
    assert trust.trusts("127.0.0.1") and trust.trusts("10.1.2.3") and trust.trusts("::1")
    assert trust.trusts("::ffff:10.0.0.5")
    assert trust.trusts("")  # unix socket peer, as Gunicorn
    assert not trust.trusts("192.168.1.1")
    assert Trust(("*",)).trusts("203.0.113.9")


def test_forwarded_for_takes_the_nearest_untrusted_hop() -> None:
    trust = Trust(("127.0.0.1", "10.0.0.2"))
    assert _client_from_forwarded_for("1.2.3.4", trust) == "1.2.3.4"
    assert _client_from_forwarded_for("6.6.6.6, 1.2.3.4, 10.0.0.2", trust) == "1.2.3.4"


# -- no exception escapes the parser (issue 8) ------------------------------------------------------


@pytest.mark.parametrize("raised", [ValueError("bad"), KeyError("x"), ZeroDivisionError(), AssertionError()])
def test_any_exception_while_parsing_is_a_400_never_raised(monkeypatch: pytest.MonkeyPatch, raised: Exception) -> None:
    # Fault injection: whatever a future bug in our callbacks raises, feed() answers 400.
    def broken(cur: object) -> None:
        raise raised

    monkeypatch.setattr("arbiter.web.http.parser.split_target", broken)
    parser = parse(b"GET /ok HTTP/1.1\r\n\r\n")
    assert parser.error is not None and parser.error.status == 400 and parser.closed
    assert parser.error.__cause__ is raised and not parser.ready


def test_system_exit_from_a_signal_handler_inside_a_callback_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def leave(cur: object) -> None:
        raise SystemExit(0)  # what the worker's SIGQUIT handler does, wherever it interrupts

    monkeypatch.setattr("arbiter.web.http.parser.split_target", leave)
    with pytest.raises(SystemExit):
        parse(b"GET / HTTP/1.1\r\n\r\n")
