"""Inputs that once crashed or confused the WSGI HTTP layer: replayed on every run.

`test_http_fuzz.py` replays each one in-process (as hypothesis examples) and against a real
sync worker. When the fuzzer finds a new failure, add the input it prints here, under a name
that says what it broke, before fixing it.
"""

from __future__ import annotations

FUZZ_CORPUS: dict[str, bytes] = {
    # Issue 8: llhttp accepts these targets, urlsplit raised ValueError inside the parser's
    # callback, and the exception killed the worker (exit 1) with every connection it held.
    "urlsplit: unclosed IPv6 host": b"GET http://[::1/x HTTP/1.1\r\n\r\n",
    "urlsplit: bare [ host": b"OPTIONS http://[ HTTP/1.1\r\n\r\n",
    "urlsplit: ] in short scheme": b"GET s://]ufd/: HTTP/1.1\r\n\r\n",
    "urlsplit: ] inside host": b"GET x://a]b/ HTTP/1.1\r\n\r\n",
    # Found by test_http_fuzz.py (3000 examples) against the code before the fix, mutating
    # `http://[v1.x]/`: the same class, reached by flipping one byte of a valid IPvFuture host.
    "urlsplit: bad IPvFuture !": b"GET http://[v!.x]/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "urlsplit: IPvFuture without v": b"GET http://[w1.x]/ HTTP/1.1\r\nHost: a\r\n\r\n",
    "urlsplit: ] without [": b"GET http://Zv1.x]/ HTTP/1.1\r\nHost: a\r\n\r\n",
    # Found by test_odd_request_targets_never_raise against the code before the fix.
    "urlsplit: empty brackets": b"GET http://[] HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
}
