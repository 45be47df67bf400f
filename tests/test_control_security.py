"""Who may talk to the control server: socket permissions, peer uid, TCP token, Host, Origin, CSRF."""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import selectors
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from arbiter.control.security import Credentials
from arbiter.control.server import ControlServer
from arbiter.errors import ArbiterError
from control_helpers import (  # noqa: F401  (fixtures)
    LOG, FakeBackend, ServerLoop, call, jcall, make_loop, served)

NOBODY = 65534
TOKEN = "s3cret-token-value"


def test_socket_is_0600_and_removed_on_close(make_loop, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    loop = make_loop()
    assert stat.S_IMODE(os.stat(loop.unix_path).st_mode) == 0o600
    assert loop.server.addresses == [f"unix:{loop.unix_path}"]
    assert os.umask(umask) == umask  # the umask around bind was put back
    loop.stop()
    assert not os.path.exists(loop.unix_path)


def test_socket_mode_and_missing_directories(make_loop, tmp_path: Path) -> None:
    path = tmp_path / "run" / "sub" / "ctl.sock"
    make_loop(unix_path=str(path), unix_mode=0o660)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750  # as open as the socket, no more
    assert jcall(str(path), "GET", "/v1/status")[0] == 200


def test_stale_live_and_foreign_files_at_the_path(make_loop, tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a crashed master leaves this behind
    loop = make_loop(unix_path=str(path))
    assert jcall(str(path), "GET", "/v1/status")[0] == 200
    second = ControlServer(FakeBackend(tmp_path), selectors.DefaultSelector(), unix_path=str(path), log=LOG)
    with pytest.raises(ArbiterError, match="in use"):
        second.start()
    assert jcall(str(path), "GET", "/v1/status")[0] == 200  # the running one was left alone
    loop.stop()
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(ArbiterError, match="not a socket"):
        ControlServer(FakeBackend(tmp_path), selectors.DefaultSelector(), unix_path=str(other), log=LOG).start()
    assert other.read_text() == "mine"
    with pytest.raises(ArbiterError, match="longer than"):
        ControlServer(FakeBackend(tmp_path), selectors.DefaultSelector(), unix_path="/tmp/" + "x" * 120,
                      log=LOG).start()
    with pytest.raises(ArbiterError, match="needs a unix socket path or a TCP address"):
        ControlServer(FakeBackend(tmp_path), selectors.DefaultSelector(), unix_path=None, log=LOG).start()


def test_close_leaves_a_successors_socket(make_loop, tmp_path: Path) -> None:
    loop = make_loop()
    os.unlink(loop.unix_path)
    successor = socket.socket(socket.AF_UNIX)
    successor.bind(loop.unix_path)
    try:
        loop.stop()
        assert os.path.exists(loop.unix_path)
    finally:
        successor.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory `nobody` can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="arbiter-ctl-"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path)


def _as_nobody(action: Callable[[], bytes]) -> bytes:
    """Run `action` in a forked child that dropped to uid `nobody`; return what it produced."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os calls and sockets until os._exit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = action()
        except BaseException as exc:
            result = f"error: {exc!r}".encode()
        os.write(write_end, result)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return data


def _raw_request(path: str, close: bool = False) -> Callable[[], bytes]:
    def request() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            extra = b"Connection: close\r\n" if close else b""
            sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n" + extra + b"\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data
    return request


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another uid")
def test_other_users_are_refused(make_loop, shared_dir: Path) -> None:
    private = make_loop(unix_path=str(shared_dir / "private.sock"))
    assert b"PermissionError" in _as_nobody(_raw_request(private.unix_path))  # mode 0600: no connect
    open_socket = make_loop(unix_path=str(shared_dir / "open.sock"), unix_mode=0o666)
    answer = _as_nobody(_raw_request(open_socket.unix_path))
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert b'"FORBIDDEN"' in answer and b"uid 65534" in answer
    assert jcall(open_socket.unix_path, "GET", "/v1/status")[0] == 200  # root (us) still may


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another uid")
def test_a_socket_given_to_a_user_admits_that_user_only(make_loop, shared_dir: Path) -> None:
    """Supervisor's chown: an event listener running as that user may call back."""
    given = make_loop(unix_path=str(shared_dir / "given.sock"), unix_mode=0o600, unix_owner="nobody")
    answer = _as_nobody(_raw_request(given.unix_path, close=True))
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert jcall(given.unix_path, "GET", "/v1/status")[0] == 200  # root (us) still may


def test_close_in_child_leaves_the_parent_serving(served: ServerLoop) -> None:
    pid = os.fork()
    if pid == 0:
        served.server.close_in_child()
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert os.path.exists(served.unix_path)
    assert jcall(served.unix_path, "GET", "/v1/status")[0] == 200


def _tcp(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_tcp_needs_the_token(make_loop, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), token=TOKEN)
    port = loop.port
    assert loop.server.addresses == [f"http://127.0.0.1:{port}"]
    status, headers, data = _tcp(port, "GET", "/v1/status")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer") and b"UNAUTHORIZED" in data
    assert _tcp(port, "GET", "/v1/status", {"Authorization": "Bearer wrong"})[0] == 401
    assert _tcp(port, "GET", "/v1/status", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    status, headers, _ = _tcp(port, "GET", "/v1/status", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert _tcp(port, "GET", "/healthz")[0] == 200  # probes need no token
    assert _tcp(port, "GET", "/metrics")[0] == 401
    # A bearer client may name the server as it likes (a proxy, an SSH tunnel...).
    assert _tcp(port, "GET", "/v1/status", {"Authorization": f"Bearer {TOKEN}", "Host": "ctl.example"})[0] == 200
    assert TOKEN not in caplog.text


def test_tcp_refuses_to_start_without_a_credential_even_on_loopback(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "192.0.2.10", "::", "example.com"):
        server = ControlServer(FakeBackend(tmp_path), selectors.DefaultSelector(), unix_path=None,
                               tcp=(host, 0), log=LOG)
        with pytest.raises(ArbiterError, match="without a credential") as caught:
            server.start()
        assert "secrets.token_urlsafe(32))' > token" in str(caught.value)
        assert "--control-token-file token" in str(caught.value)
        assert server.addresses == []


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("stored", ["pa:ss word", "{SHA}" + hashlib.sha1(b"pa:ss word").hexdigest()])
def test_tcp_basic_auth_as_supervisor(make_loop, caplog: pytest.LogCaptureFixture, stored: str) -> None:
    caplog.set_level(logging.DEBUG)
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), username="admin", password=stored)
    port = loop.port
    status, headers, _ = _tcp(port, "GET", "/v1/status")
    assert status == 401 and headers["www-authenticate"].startswith("Basic realm=")
    assert _tcp(port, "GET", "/v1/status", _basic("admin", "pa:ss word"))[0] == 200
    assert _tcp(port, "GET", "/v1/status", _basic("admin", "wrong"))[0] == 401
    assert _tcp(port, "GET", "/v1/status", _basic("root", "pa:ss word"))[0] == 401
    assert _tcp(port, "GET", "/v1/status", {"Authorization": "Basic not-base64!"})[0] == 401
    assert _tcp(port, "GET", "/v1/status", {"Authorization": "Bearer pa:ss word"})[0] == 401
    if stored.startswith("{SHA}"):  # the digest itself is not the password
        assert _tcp(port, "GET", "/v1/status", _basic("admin", stored))[0] == 401
    assert _tcp(port, "GET", "/healthz")[0] == 200 and _tcp(port, "GET", "/readyz")[0] == 200
    assert "pa:ss word" not in caplog.text and stored not in caplog.text


def test_credentials_hide_their_secrets() -> None:
    credentials = Credentials(token="tok-secret", username="admin", password="pw-secret")
    assert "secret" not in repr(credentials) and "secret" not in str(credentials)


def test_host_origin_and_csrf(make_loop) -> None:
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), token=TOKEN)
    port, csrf = loop.port, loop.server.csrf_token
    own = f"127.0.0.1:{port}"
    _, headers, _ = _tcp(port, "GET", f"/login?token={TOKEN}")
    session = {"Cookie": headers["set-cookie"].split(";")[0]}  # a browser: the session cookie, no bearer
    assert _tcp(port, "GET", "/v1/status", session)[0] == 200
    assert _tcp(port, "GET", "/v1/status", {**session, "Host": f"localhost:{port}"})[0] == 200
    # DNS rebinding: a hostile name that resolves to 127.0.0.1 arrives with its own Host.
    status, _, data = _tcp(port, "GET", "/v1/status", {**session, "Host": f"evil.example:{port}"})
    assert status == 403 and b"not this server's address" in data
    assert _tcp(port, "GET", "/v1/status", {**session, "Host": "127.0.0.1:1"})[0] == 403
    assert _tcp(port, "GET", "/v1/status", {**session, "Origin": "http://evil.example"})[0] == 403
    assert _tcp(port, "GET", "/v1/status", {**session, "Origin": f"http://{own}"})[0] == 200
    body, json_type = b'{"wait": false}', {"Content-Type": "application/json", **session}
    status, _, data = _tcp(port, "POST", "/v1/reload", {**json_type, "Origin": f"http://{own}"}, body)
    assert status == 403 and b"X-CSRF-Token" in data
    assert _tcp(port, "POST", "/v1/reload", {**json_type, "Sec-Fetch-Site": "same-origin",
                                              "X-CSRF-Token": "guess"}, body)[0] == 403
    status, _, _ = _tcp(port, "POST", "/v1/reload", {**json_type, "Origin": f"http://{own}", "X-CSRF-Token": csrf}, body)
    assert status == 200
    script = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    assert _tcp(port, "POST", "/v1/reload", script, body)[0] == 200  # a script: no browser headers


def test_dashboard_login_cookie(make_loop) -> None:
    loop = make_loop(unix_path=None, tcp=("127.0.0.1", 0), token=TOKEN)
    port = loop.port
    assert _tcp(port, "GET", "/")[0] == 401
    assert _tcp(port, "GET", "/login?token=nope")[0] == 401
    status, headers, _ = _tcp(port, "GET", f"/login?token={TOKEN}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"].split(";")[0]
    assert TOKEN not in cookie and "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
    status, headers, page = _tcp(port, "GET", "/", {"Cookie": cookie})
    assert status == 200 and loop.server.csrf_token.encode() in page
    assert "script-src 'nonce-" in headers["content-security-policy"]  # the page's own policy
    post = {"Cookie": cookie, "Content-Type": "application/json"}
    assert _tcp(port, "POST", "/v1/scale", post, b'{"spec": "+1"}')[0] == 403
    status, _, _ = _tcp(port, "POST", "/v1/scale", {**post, "X-CSRF-Token": loop.server.csrf_token}, b'{"spec": "+1"}')
    assert status == 200 and loop.backend.master["workers_target"] == 3


def test_unix_socket_host_rules(served: ServerLoop) -> None:
    assert call(served.unix_path, "GET", "/v1/status", headers={"Host": "localhost:8080"})[0] == 200
    assert call(served.unix_path, "GET", "/v1/status", headers={"Host": ""})[0] == 200
    assert call(served.unix_path, "GET", "/v1/status", headers={"Host": "evil.example"})[0] == 403
