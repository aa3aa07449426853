"""HTTPS: `bingsan serve --tls-cert/--tls-key` (docs/security.md, "TLS").

Each test makes its own self-signed certificate for 127.0.0.1/localhost
with the openssl CLI and starts a server on it; clients (requests, Python's
`ssl` pinned to one protocol version, curl, PyIceberg) trust exactly that
certificate. Start-up errors run the binary directly with a timeout."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import BingsanServer, RawConn, assert_error, assert_serving, tls_client_context, unique

pytestmark = pytest.mark.single_node(reason="the node's own TLS listener (the front speaks plain HTTP)")

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")

# Required, not optional: a missing tool must fail the suite, not make the TLS tests vanish from it.
assert OPENSSL and CURL, "the openssl and curl CLIs are needed (test certificates, a second TLS client)"

#: A failing start-up must end within this (it opens the store first).
STARTUP_FAIL_WITHIN = 15.0


def make_cert(directory: Path, name: str = "server", key_type: str = "rsa:2048") -> tuple[Path, Path]:
    """A self-signed certificate and its unencrypted PKCS#8 key, valid for
    DNS:localhost and IP:127.0.0.1 (the way docs/security.md makes one)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key_type == "ec" else ["-newkey", key_type]
    subprocess.run(
        [OPENSSL, "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture
def cert_pair(tmp_path) -> tuple[Path, Path]:
    return make_cert(tmp_path / "pki")


@pytest.fixture
def tls_server(server_factory, cert_pair) -> BingsanServer:
    cert, key = cert_pair
    s = server_factory(name="tls", tls_cert=cert, tls_key=key)
    assert s.base_url.startswith("https://")
    return s


# ------------------------------------------------------------------ clients
def test_requests_with_the_certificate(tls_server, http):
    s, cert = tls_server, str(tls_server.tls_cert)
    r = http.get(s.url("/v1/config"), verify=cert)
    assert r.status_code == 200, r.text
    assert "endpoints" in r.json()
    ns = unique("tls")
    r = http.post(s.api("namespaces"), json={"namespace": [ns], "properties": {"via": "https"}}, verify=cert)
    assert r.status_code == 200, r.text
    r = http.get(s.api("namespaces"), verify=cert)
    assert r.status_code == 200 and [ns] in r.json()["namespaces"], r.text
    r = http.get(s.api(f"namespaces/{ns}"), verify=cert)
    assert r.json() == {"namespace": [ns], "properties": {"via": "https"}}
    # Errors come back in the ErrorModel shape over TLS too.
    assert_error(http.get(s.api(f"namespaces/{unique('missing')}"), verify=cert), 404, "NoSuchNamespaceException")
    # The certificate is really the one served: the system trust store refuses it.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(s.url("/v1/config"), timeout=10)


def test_keep_alive_and_pipelining_over_tls(tls_server):
    """Several requests on one TLS connection, in one write, with a body
    spanning many TLS records; then a plain sequential request."""
    ns = unique("tlspipe")
    big = json.dumps({"namespace": [ns], "properties": {f"k{i}": "v" * 900 for i in range(200)}}).encode()
    assert len(big) > 150_000
    with tls_server.raw() as c:
        c.send(RawConn.build("POST", "/v1/namespaces", big)
               + RawConn.build("GET", f"/v1/namespaces/{ns}")
               + RawConn.build("GET", "/v1/config"))
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        assert r1.status == 200, r1.body[:300]
        assert r2.status == 200 and len(r2.json()["properties"]) == 200
        assert r3.status == 200 and "endpoints" in r3.json()
        assert c.request("GET", "/health/live").status == 200


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_protocol_version_negotiates(tls_server, version):
    ctx = tls_client_context(tls_server.tls_cert, version=version)
    with RawConn(tls_server.port, timeout=10, tls=ctx) as c:
        expected = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert c.sock.version() == expected
        r = c.request("GET", "/v1/config")
        assert r.status == 200 and "endpoints" in r.json()
        ns = unique("ver")
        assert c.request("POST", "/v1/namespaces", json.dumps({"namespace": [ns]}).encode()).status == 200
        assert c.request("GET", f"/v1/namespaces/{ns}").status == 200


def test_hostname_localhost_also_verifies(tls_server):
    ctx = tls_client_context(tls_server.tls_cert)
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(RawConn.build("GET", "/health/live", headers={"Connection": "close"}))
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def test_curl_with_cacert(tls_server):
    s = tls_server
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--cacert", str(s.tls_cert), "-w", "\n%{http_code} %{ssl_verify_result}",
         s.url("/v1/config")],
        capture_output=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    body, _, tail = out.stdout.decode().rpartition("\n")
    assert tail == "200 0", tail
    assert "endpoints" in json.loads(body)
    # Without the CA: curl refuses the self-signed certificate (exit 60).
    out = subprocess.run([CURL, "-sS", "--max-time", "10", s.url("/v1/config")], capture_output=True, timeout=20)
    assert out.returncode == 60, (out.returncode, out.stderr)
    assert_serving(s)


def test_pyiceberg_over_https(tls_server, monkeypatch):
    s, cert = tls_server, str(tls_server.tls_cert)
    # requests lets these variables override a Session's `verify` (which is
    # where PyIceberg puts the bundle): without them the option must suffice.
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    # PyIceberg's option is `ssl` = {"cabundle": path} (pyiceberg.catalog.rest.CA_BUNDLE).
    catalog = s.catalog(ssl={"cabundle": cert})
    ns = unique("pyice")
    catalog.create_namespace(ns, {"owner": "tls"})
    assert (ns,) in catalog.list_namespaces()
    assert catalog.load_namespace_properties(ns) == {"owner": "tls"}
    # Without the bundle, PyIceberg's first call (GET /v1/config) fails verification.
    with pytest.raises(requests.exceptions.SSLError):
        s.catalog()


# ------------------------------------------------------------------ misbehaving clients
def test_plain_http_to_tls_port_gets_no_bytes(tls_server):
    s = tls_server
    for request in (b"GET /v1/config HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        with RawConn(s.port, timeout=5) as c:  # no TLS
            c.send(request)
            got = b""
            try:
                while chunk := c.sock.recv(4096):
                    got += chunk
            except ConnectionResetError:
                pass  # closed with the request unread: a reset is fine
            except socket.timeout:
                pytest.fail(f"plain {request[:20]!r}: connection neither closed nor answered within 5s")
            assert got == b"", f"plain {request[:20]!r} got bytes back: {got[:200]!r}"
    assert_serving(s)


@pytest.fixture
def tls_timeout_server(server_factory, cert_pair) -> BingsanServer:
    """One shard, TLS, --request-timeout-ms 1000 (which bounds handshakes)."""
    cert, key = cert_pair
    return server_factory(name="tls-timeout", shards=1, tls_cert=cert, tls_key=key,
                          extra_args=["--request-timeout-ms", "1000"])


def assert_closed_after_handshake_timeout(server: BingsanServer, first_bytes: bytes) -> None:
    """A TCP connection to the TLS port that sends `first_bytes` and then
    nothing is closed about 1 s (the request timeout) later; the shard
    serves others meanwhile."""
    with RawConn(server.port, timeout=5) as c:  # no TLS: we play a stuck client
        started = time.monotonic()
        if first_bytes:
            c.send(first_bytes)
        assert_serving(server)  # same (single) shard, served meanwhile
        closed = c.closed_by_peer(timeout=max(0.1, started + 4.0 - time.monotonic()))
        elapsed = time.monotonic() - started
        assert closed, f"connection still open {elapsed:.1f}s after connecting (--request-timeout-ms 1000)"
        assert 0.5 <= elapsed <= 3.0, f"closed after {elapsed:.2f}s with a 1s timeout"
    assert_serving(server)


@pytest.mark.parametrize("first_bytes", [b"\x16", b"\x16\x03\x01\x02\x00\x01"], ids=["one-byte", "record-header"])
def test_stalled_handshake_is_bounded(tls_timeout_server, first_bytes):
    """A ClientHello that stops coming (after one byte, or after a record
    header announcing 512 bytes)."""
    assert_closed_after_handshake_timeout(tls_timeout_server, first_bytes)


def test_silent_client_on_tls_port_is_bounded(tls_timeout_server):
    assert_closed_after_handshake_timeout(tls_timeout_server, b"")


# ------------------------------------------------------------------ start-up errors
def run_serve(binary: Path, workdir: Path, cert: Path, key: Path) -> tuple[int, str, float]:
    """Runs `bingsan serve` with these TLS files; it must exit by itself.
    Returns (exit code, stderr+stdout, seconds)."""
    cmd = BingsanServer(workdir, binary=binary, shards=1, tls_cert=cert, tls_key=key).command()
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=STARTUP_FAIL_WITHIN,
                             env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "BINGSAN_LOG": "info"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"bingsan serve did not exit within {STARTUP_FAIL_WITHIN}s: {e.stderr!r}")
    text = (out.stderr + out.stdout).decode(errors="replace")
    return out.returncode, text, time.monotonic() - started


def _case(tmp: Path, case: str) -> tuple[Path, Path, Path, tuple[str, ...]]:
    """(cert, key, file the message must name, words one of which it must hold)."""
    cert, key = make_cert(tmp / "good")
    if case == "missing-cert":
        missing = tmp / "nope" / "cert.pem"
        return missing, key, missing, ("read", "no such file", "not found")
    if case == "missing-key":
        missing = tmp / "nope" / "key.pem"
        return cert, missing, missing, ("read", "no such file", "not found")
    if case == "cert-is-directory":
        d = tmp / "a-directory.pem"
        d.mkdir()
        return d, key, d, ("read", "directory")
    if case == "no-certificate-text":
        junk = tmp / "junk.pem"
        junk.write_text("this is not a certificate\n")
        return junk, key, junk, ("no certificate", "certificate")
    if case == "no-certificate-key-pem":
        # The key's own PEM file given as the certificate: PEM, but no CERTIFICATE block.
        return key, key, key, ("no certificate",)
    if case == "no-key-in-key-file":
        # The certificate given as the key.
        return cert, cert, cert, ("key",)
    if case == "key-does-not-match":
        _, other_key = make_cert(tmp / "other")
        return cert, other_key, cert, ("match", "fit", "belong", "inconsistent")
    if case == "key-of-other-type":
        _, ec_key = make_cert(tmp / "ec", key_type="ec")
        return cert, ec_key, cert, ("match", "fit", "belong", "inconsistent")
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "missing-cert", "missing-key", "cert-is-directory", "no-certificate-text", "no-certificate-key-pem",
    "no-key-in-key-file", "key-does-not-match", "key-of-other-type",
])
def test_bad_tls_files_fail_startup(binary, tmp_path, case):
    cert, key, named, words = _case(tmp_path, case)
    code, text, took = run_serve(binary, tmp_path / "srv", cert, key)
    assert code not in (0, None) and code > 0, f"exit code {code}; output:\n{text}"
    assert took < STARTUP_FAIL_WITHIN
    assert str(named) in text, f"message does not name {named}:\n{text}"
    lower = text.lower()
    assert any(w in lower for w in words), f"message does not say what is wrong ({words}):\n{text}"
    assert "bingsan is serving" not in text, text
