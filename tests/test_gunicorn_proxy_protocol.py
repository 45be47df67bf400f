"""--proxy-protocol on a real master: HAProxy's v1 and v2 headers (v2 built byte by byte from the
specification here, not by the library the server uses) set REMOTE_ADDR; a missing header from
a proxy, or a forged one from a peer outside --proxy-allow-from, is refused."""

from __future__ import annotations

import json
import socket
import struct

import pytest
from conftest import run_arbiter

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: str, src_port: int, dst: str, dst_port: int, command: int = 0x1) -> bytes:
    """A PROXY v2 header, per the specification: signature, version 2 and command (0x20 | cmd:
    0 LOCAL, 1 PROXY), family and transport (0x11 TCP over IPv4, 0x21 TCP over IPv6), length."""
    if ":" in src:
        family, addresses = 0x21, socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        family, addresses = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    body = addresses + struct.pack("!HH", src_port, dst_port)
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


REQUEST = b"GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def environ_of(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    return json.loads(body)


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_v1_and_v2_set_remote_addr(arbiter, kind):
    master = arbiter(["compat_app:wsgi", "-k", kind, "--proxy-protocol"])
    master.wait_ready(1)
    v1 = environ_of(exchange(master.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n" + REQUEST))
    assert (v1["REMOTE_ADDR"], v1["REMOTE_PORT"]) == ("203.0.113.7", "51000")
    v2 = environ_of(exchange(master.port, v2_header("198.51.100.9", 40000, "10.0.0.1", 443) + REQUEST))
    assert (v2["REMOTE_ADDR"], v2["REMOTE_PORT"]) == ("198.51.100.9", "40000")
    v6 = environ_of(exchange(master.port, v2_header("2001:db8::5", 1234, "2001:db8::1", 443) + REQUEST))
    assert v6["REMOTE_ADDR"] == "2001:db8::5"
    # The header and the request in separate packets: the worker waits for the whole header.
    with socket.create_connection(("127.0.0.1", master.port), timeout=10) as sock:
        header = v2_header("192.0.2.44", 999, "10.0.0.1", 80)
        sock.sendall(header[:7])
        sock.sendall(header[7:] + REQUEST)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert environ_of(answer)["REMOTE_ADDR"] == "192.0.2.44"
    local = environ_of(exchange(master.port, v2_header("0.0.0.0", 0, "0.0.0.0", 0, command=0) + REQUEST))
    assert local["REMOTE_ADDR"] == "127.0.0.1"  # LOCAL: the proxy's own connection


def test_versions_can_be_required(arbiter):
    master = arbiter(["compat_app:wsgi", "--proxy-protocol", "v1"])
    master.wait_ready(1)
    assert exchange(master.port, v2_header("198.51.100.9", 1, "10.0.0.1", 2) + REQUEST).startswith(
        b"HTTP/1.1 400")
    assert environ_of(exchange(master.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n" + REQUEST))


def test_missing_or_malformed_header_from_the_proxy_is_refused(arbiter):
    master = arbiter(["compat_app:wsgi", "--proxy-protocol", "auto"])
    master.wait_ready(1)
    assert exchange(master.port, REQUEST).startswith(b"HTTP/1.1 400")
    assert exchange(master.port, b"PROXY TCP4 203.0.113.777 10.0.0.1 1 2\r\n" + REQUEST).startswith(b"HTTP/1.1 400")
    assert exchange(master.port, b"PROXY TCP4 " + b"1" * 200 + b"\r\n" + REQUEST).startswith(b"HTTP/1.1 400")
    assert master.get("/env")[0] == 400  # a plain client where a proxy is expected
    assert master.proc.poll() is None and len(master.workers()) == 1


def test_a_forged_header_from_a_disallowed_peer_is_refused(arbiter):
    # 127.0.0.1 is not a proxy here: it is served as a direct client, and may not claim another address.
    master = arbiter(["compat_app:wsgi", "--proxy-protocol", "--proxy-allow-from", "192.0.2.1"])
    master.wait_ready(1)
    assert exchange(master.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n" + REQUEST).startswith(
        b"HTTP/1.1 403")
    assert exchange(master.port, v2_header("203.0.113.7", 1, "10.0.0.1", 2) + REQUEST).startswith(b"HTTP/1.1 403")
    direct = environ_of(exchange(master.port, REQUEST))
    assert direct["REMOTE_ADDR"] == "127.0.0.1"
    assert master.get("/env", method="PROPFIND")[0] == 200  # "PRO..." is not taken for a header


def test_refused_with_tls_and_with_the_uvicorn_worker(tmp_path):
    result = run_arbiter(["compat_app:wsgi", "--proxy-protocol", "--certfile", "c.pem", "--keyfile", "k.pem"])
    assert result.returncode == 2 and "--proxy-protocol with --certfile is not supported" in result.stderr
    result = run_arbiter(["compat_app:asgi", "--proxy-protocol", "-b", "127.0.0.1:0"], timeout=60)
    assert result.returncode != 0
    assert "--proxy-protocol is not supported by the uvicorn worker yet" in result.stderr
