"""Gunicorn's TLS flags on a real master: client certificates (--cert-reqs, --ca-certs), the
lowest protocol (--ssl-version), --ciphers; a bad value stops the start before any bind."""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from conftest import run_arbiter

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    files = {name: str(d / name) for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem",
                                              "client.key", "ext.cnf")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca.key"], "-out", files["ca.pem"],
             "-days", "1", "-subj", "/CN=test CA")
    Path(files["ext.cnf"]).write_text("subjectAltName = IP:127.0.0.1\n")
    for who in ("server", "client"):
        csr = str(d / f"{who}.csr")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", files[f"{who}.key"], "-out", csr,
                 "-subj", f"/CN={who}")
        _openssl("x509", "-req", "-in", csr, "-CA", files["ca.pem"], "-CAkey", files["ca.key"], "-CAcreateserial",
                 "-out", files[f"{who}.pem"], "-days", "1", "-extfile", files["ext.cnf"])
    return files


def _get(port: int, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def _client(pki: dict[str, str], cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca.pem"])
    if cert:
        context.load_cert_chain(pki["client.pem"], pki["client.key"])
    return context


@pytest.mark.parametrize("app, kind", [("wsgi_app:application", "sync"), ("wsgi_app:application", "gthread"),
                                       ("asgi_app:app", "uvicorn")])
def test_required_client_certificate(arbiter, pki, app, kind):
    master = arbiter([app, "-k", kind, "--certfile", pki["server.pem"], "--keyfile",
                      pki["server.key"], "--cert-reqs", "2", "--ca-certs", pki["ca.pem"]])
    master.wait_log(r"Listening at: https://")
    assert _get(master.port, _client(pki, cert=True)) == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(master.port, _client(pki, cert=False))  # no certificate: the handshake fails


def test_ssl_version_sets_the_lowest_protocol(arbiter, pki):
    master = arbiter(["wsgi_app:application", "--certfile", pki["server.pem"], "--keyfile", pki["server.key"],
                      "--ssl-version", "TLSv1_3"])
    master.wait_log(r"Listening at: https://")
    assert _get(master.port, _client(pki)) == 200
    old = _client(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _get(master.port, old)


def test_ciphers_are_applied(arbiter, pki):
    master = arbiter(["wsgi_app:application", "--certfile", pki["server.pem"], "--keyfile", pki["server.key"],
                      "--ssl-version", "TLSv1_2", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256"])
    master.wait_log(r"Listening at: https://")
    client = _client(pki)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")  # not the server's one: no common cipher
    with pytest.raises(ssl.SSLError):
        _get(master.port, client)
    client.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    assert _get(master.port, client) == 200


@pytest.mark.parametrize("args, message", [
    (["--ciphers", "NO-SUCH-CIPHER"], "--ciphers 'NO-SUCH-CIPHER': OpenSSL knows none of these ciphers"),
    (["--cert-reqs", "2"], "--cert-reqs 2 asks for client certificates: name the CAs"),
    (["--ssl-version", "TLSv1"], "'ssl_version' must be one of TLS, TLS_SERVER, SSLv23, TLSv1_2, TLSv1_3"),
])
def test_bad_tls_settings_stop_the_start(pki, args, message):
    result = run_arbiter(["wsgi_app:application", "--certfile", pki["server.pem"], "--keyfile", pki["server.key"],
                          *args])
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Listening" not in result.stderr


def test_ssl_context_hook_shapes_the_context(arbiter, pki, tmp_path):
    marker = tmp_path / "hook.log"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"import ssl\n\ndef ssl_context(config, default_ssl_context_factory):\n"
                    f"    context = default_ssl_context_factory()\n"
                    f"    context.minimum_version = ssl.TLSVersion.TLSv1_3\n"
                    f"    open({str(marker)!r}, 'a').write('called\\n')\n"
                    f"    return context\n")
    master = arbiter(["-c", str(conf), "wsgi_app:application", "--certfile", pki["server.pem"], "--keyfile",
                      pki["server.key"]])
    master.wait_log(r"Listening at: https://")
    assert _get(master.port, _client(pki)) == 200
    old = _client(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _get(master.port, old)
    assert "called" in marker.read_text()
