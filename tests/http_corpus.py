"""The request-smuggling corpus: requests every worker class must refuse, with the status.

One list for all worker classes: the parser's unit tests, the sync and gthread workers end to
end, and the ASGI and gevent workers all run it, so a vector refused by one is refused by all.
"""

from __future__ import annotations

# What llhttp (httptools) refuses by itself; any 4xx/5xx answer is right.
LLHTTP_REFUSES = {
    "CL with TE": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE with CL": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "duplicate CL": b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting CL": b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "CL list": b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
    "negative CL": b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc",
    "plus CL": b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
    "NUL in header": b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    "bare CR in header": b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "bare LF line end": b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
    "control char": b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
    "unknown method": b"FOO / HTTP/1.1\r\n\r\n",
    "unknown method -BLARGH": b"-BLARGH / HTTP/1.1\r\n\r\n",
    "method not a token": b"G(T / HTTP/1.1\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\n\r\n",
    "HTTP/1.2": b"GET / HTTP/1.2\r\n\r\n",
    "lowercase http": b"GET / http/1.1\r\n\r\n",
    "TE gzip only": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "chunked twice": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "NUL in target": b"GET /a\x00b HTTP/1.1\r\n\r\n",
    "high byte in target": b"GET /a\xffb HTTP/1.1\r\n\r\n",
    "Content-Length in trailers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nContent-Length: 5\r\n\r\n"
    ),
    "Transfer-Encoding in trailers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    # llhttp's leniency flag for these is a smuggling risk by its own account: they stay refused.
    "space in chunk extension": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a=b\r\nx\r\n0\r\n\r\n"
    ),
}

# The entries of LLHTTP_REFUSES whose status is not just any 4xx/5xx: a method llhttp does not
# know is 501 Not Implemented when it is a token (RFC 9110 section 9.1), 400 when it is not one.
LLHTTP_STATUS = {
    "unknown method": 501,
    "unknown method -BLARGH": 501,
    "lowercase method": 501,
    "method not a token": 400,
}

# Request lines that once killed a sync or gthread worker (issue 8): llhttp accepts the target,
# and `urlsplit` raised ValueError from inside the parser's callback. Refused with a 400.
WORKER_KILLERS = {
    "unclosed IPv6 host": b"GET http://[::1/x HTTP/1.1\r\n\r\n",
    "bare [ host": b"OPTIONS http://[ HTTP/1.1\r\n\r\n",
    "] in short scheme": b"GET s://]ufd/: HTTP/1.1\r\n\r\n",
    "] inside host": b"GET x://a]b/ HTTP/1.1\r\n\r\n",
}

# What llhttp lets through and the wrapper refuses, with the status it answers.
WRAPPER_REFUSES = {
    "HTTP/0.9 line": (b"GET /\r\n\r\n", 400),
    "HTTP/2.0": (b"GET / HTTP/2.0\r\n\r\n", 400),
    "TE gzip, chunked": (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "TE on two lines": (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    "TE in HTTP/1.0": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "two Host headers": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "two Content-Type headers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}", 400),
    "GET *": (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "OPTIONS *x": (b"OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    # Trailers are never merged into the request's headers; these may only be in a head.
    "Host in trailers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\na\r\n0\r\nHost: evil.example.com\r\n\r\n", 400),
    "Authorization in trailers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\na\r\n0\r\nAuthorization: Basic YTpi\r\n\r\n", 400),
    "X-Forwarded-For in trailers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\na\r\n0\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n", 400),
    **{name: (data, 400) for name, data in WORKER_KILLERS.items()},
}
