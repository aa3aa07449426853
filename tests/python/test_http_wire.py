"""HTTP/1.1 on raw sockets: pipelining, chunked bodies, 100-continue,
limits (413/431), broken clients and malformed requests."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from harness import RawConn, assert_error, create_table_raw, table_url, unique

pytestmark = pytest.mark.single_node(reason="the node's own HTTP/1.1 framing, limits and timeouts: through nginx these would test nginx")


def create_body(*parts: str) -> bytes:
    return json.dumps({"namespace": list(parts)}).encode()


def wait_connections(server, expected: int, timeout: float = 5.0) -> float:
    """Waits until the shards' open-connection gauge sums to `expected`."""
    deadline = time.monotonic() + timeout
    while True:
        n = server.metrics().sum("bingsan_http_connections")
        if n == expected or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def test_pipelined_requests_in_one_write(server):
    ns = unique()
    with server.raw() as c:
        c.send(
            RawConn.build("POST", "/v1/namespaces", create_body(ns))
            + RawConn.build("GET", f"/v1/namespaces/{ns}")
            + RawConn.build("HEAD", f"/v1/namespaces/{ns}")
            + RawConn.build("GET", "/v1/config")
            + RawConn.build("GET", f"/v1/namespaces/{unique('missing')}")
        )
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response(head=True)
        r4 = c.read_response()
        r5 = c.read_response()
        assert r1.status == 200 and r1.json()["namespace"] == [ns]
        assert r2.status == 200 and r2.json() == {"namespace": [ns], "properties": {}}
        assert r3.status == 204 and r3.body == b""
        assert r4.status == 200 and "endpoints" in r4.json()
        assert_error(r5, 404, "NoSuchNamespaceException")
        # Still usable afterwards.
        assert c.request("GET", "/health/live").status == 200
        assert c.buf == b"", "unexpected extra bytes after the responses"


def test_pipelined_big_answers_keep_their_order(server):
    """An answer over 256 KiB is sent from its own buffer, after the
    answers before it: pipelined around and after it, every answer comes
    whole and in order, and `Connection: close` still closes after it."""
    ns = unique()
    with requests.Session() as http:
        assert http.post(server.api("namespaces"), json={"namespace": [ns]}).status_code == 200
        create_table_raw(http, server, ns, "big")
        big = {"updates": [{"action": "set-properties", "updates": {"pad": "x" * 600_000}}]}
        assert http.post(table_url(server, ns, "big"), json=big).status_code == 200
    path = server.api_path(f"namespaces/{ns}/tables/big")
    with server.raw() as c:
        c.send(
            RawConn.build("GET", "/v1/config")
            + RawConn.build("GET", path)
            + RawConn.build("GET", f"/v1/namespaces/{ns}")
            + RawConn.build("HEAD", path)
            + RawConn.build("GET", path, headers={"Connection": "close"})
        )
        assert "endpoints" in c.read_response().json()
        first = c.read_response()
        assert first.status == 200 and len(first.body) > 600_000
        assert first.json()["metadata"]["properties"]["pad"] == "x" * 600_000
        assert c.read_response().json() == {"namespace": [ns], "properties": {}}
        head = c.read_response(head=True)
        assert head.status == 204 and head.body == b""
        last = c.read_response()
        assert last.body == first.body
        c.sock.settimeout(5)
        assert c.sock.recv(1) == b"", "the connection stays open after Connection: close"


def test_pipelined_requests_split_across_writes(server):
    reqs = b"".join(RawConn.build("GET", "/v1/config") for _ in range(3))
    with server.raw() as c:
        # Cut through the middle of the second request's head.
        cut = len(reqs) // 2
        c.send(reqs[:cut])
        time.sleep(0.05)
        c.send(reqs[cut:])
        bodies = [c.read_response().body for _ in range(3)]
        assert len(set(bodies)) == 1 and json.loads(bodies[0])["endpoints"]


def test_many_pipelined_requests(server):
    n = 200
    with server.raw() as c:
        c.send(RawConn.build("GET", "/health/live") * n)
        for _ in range(n):
            assert c.read_response().status == 200


def test_chunked_request_body(server):
    ns = unique()
    body = json.dumps({"namespace": [ns], "properties": {"via": "chunked"}}).encode()
    pieces = [body[:5], body[5:20], body[20:]]
    chunked = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    head = (
        f"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with server.raw() as c:
        c.send(head + chunked[:7])
        time.sleep(0.05)
        c.send(chunked[7:])
        r = c.read_response()
        assert r.status == 200, r.body
        assert r.json() == {"namespace": [ns], "properties": {"via": "chunked"}}
        # Keep-alive continues after a chunked request.
        r = c.request("GET", f"/v1/namespaces/{ns}")
        assert r.json()["properties"] == {"via": "chunked"}


def test_chunked_with_extension_and_trailer(server):
    ns = unique()
    body = create_body(ns)
    chunked = f"{len(body):x};name=value\r\n".encode() + body + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    head = b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with server.raw() as c:
        c.send(head + chunked)
        r = c.read_response()
        assert r.status == 200, r.body
        assert c.request("GET", f"/v1/namespaces/{ns}").status == 200


def test_expect_100_continue(server):
    ns = unique()
    body = create_body(ns)
    head = (
        f"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with server.raw() as c:
        c.send(head)
        interim = c.read_response()
        assert interim.status == 100, interim
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r.body
        assert r.json()["namespace"] == [ns]


def test_chunked_and_expect_continue(server):
    ns = unique()
    body = create_body(ns)
    head = b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    with server.raw() as c:
        c.send(head)
        assert c.read_response().status == 100
        c.send(f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r.body


@pytest.fixture
def small_limits_server(server_factory):
    return server_factory(name="limits", extra_args=["--max-body-bytes", "1024", "--max-header-bytes", "2048"])


def test_413_content_length_over_limit(small_limits_server):
    s = small_limits_server
    body = create_body("x" * 2000)
    with s.raw() as c:
        # Only the head: the server must refuse on Content-Length alone.
        c.send(f"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert_error(c.read_response(), 413, "PayloadTooLargeException")
        assert c.closed_by_peer()
    # A body at the limit is fine.
    ok = json.dumps({"namespace": [unique()], "properties": {"p": "y" * 900}}).encode()
    assert 900 < len(ok) <= 1024
    r = requests.post(s.api("namespaces"), data=ok, timeout=10)
    assert r.status_code == 200, r.text


def test_413_chunked_over_limit(small_limits_server):
    s = small_limits_server
    with s.raw() as c:
        c.send(b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        c.send(b"".join(b"100\r\n" + b" " * 256 + b"\r\n" for _ in range(6)))
        assert_error(c.read_response(), 413, "PayloadTooLargeException")


def test_413_with_expect_continue_gets_no_100(small_limits_server):
    with small_limits_server.raw() as c:
        c.send(b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        r = c.read_response()
        assert_error(r, 413, "PayloadTooLargeException")


def test_431_header_too_large(small_limits_server):
    with small_limits_server.raw() as c:
        c.send(f"GET /v1/config HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 3000}\r\n\r\n".encode())
        assert_error(c.read_response(), 431, "RequestHeaderFieldsTooLargeException")
        assert c.closed_by_peer()


def test_431_default_limit(server):
    with server.raw() as c:
        c.send(f"GET /v1/config HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 17000}\r\n\r\n".encode())
        assert_error(c.read_response(), 431, "RequestHeaderFieldsTooLargeException")


def test_431_too_many_headers(server):
    headers = "".join(f"X-H{i}: v\r\n" for i in range(100))
    with server.raw() as c:
        c.send(f"GET /v1/config HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        assert_error(c.read_response(), 431, "RequestHeaderFieldsTooLargeException")


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/config HTTP/9.9\r\n\r\n",
        b"GET  /v1/config HTTP/1.1\r\n\r\n",
        b"\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        b"GET /v1/config HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /v1/namespaces HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/namespaces HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["no-target", "bad-version", "double-space", "binary-method", "bad-header", "bad-length", "bad-chunk"],
)
def test_400_malformed_request(server, raw):
    with server.raw() as c:
        c.send(raw)
        assert_error(c.read_response(), 400, "BadRequestException")
        assert c.closed_by_peer()


def test_conflicting_framing_headers(server):
    """Content-Length together with chunked, or two different lengths, are
    request-smuggling vectors: refuse them."""
    for head in (
        b"POST /v1/namespaces HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n{}{}",
        b"POST /v1/namespaces HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ):
        with server.raw() as c:
            c.send(head)
            assert_error(c.read_response(), 400, "BadRequestException")


def test_client_disconnects_mid_request(fresh_server):
    s = fresh_server
    base = wait_connections(s, 0)
    assert base == 0
    broken = [
        b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na",
        b"GET /v1/namesp",
        b"POST /v1/namespaces HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"names",
        b"POST /v1/namespaces HTTP/1.1\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n",
    ]
    for _ in range(5):
        for half in broken:
            c = s.raw()
            c.send(half)
            c.close()
    # One that resets instead of closing (SO_LINGER 0).
    c = s.raw()
    c.send(broken[0])
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    # Others are served, on every shard.
    ns = unique()
    with s.raw() as c1:
        assert c1.request("POST", "/v1/namespaces", create_body(ns)).status == 200
    for _ in range(10):
        with s.raw() as c2:
            assert c2.request("GET", f"/v1/namespaces/{ns}").status == 200
    # And no connection is left open on the server.
    assert wait_connections(s, 0) == 0
    assert s.running


def test_connection_close_and_http10(server):
    with server.raw() as c:
        r = c.request("GET", "/health/live", headers={"Connection": "close"})
        assert r.status == 200
        assert r.headers.get("connection", "").lower() == "close"
        assert c.closed_by_peer()
    with server.raw() as c:
        c.send(b"GET /health/live HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
        assert c.closed_by_peer()
    with server.raw() as c:
        c.send(b"GET /health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().status == 200
        assert c.request("GET", "/health/live").status == 200


def test_head_has_length_but_no_body(server):
    with server.raw() as c:
        get = c.request("GET", "/v1/config")
        head = c.request("HEAD", "/v1/config")
        assert head.status == 200
        assert head.body == b""
        assert int(head.headers["content-length"]) == len(get.body)
        # The next response is framed right (no stray body bytes).
        assert c.request("GET", "/health/live").status == 200


def test_request_timeout(server_factory):
    s = server_factory(name="timeout", extra_args=["--request-timeout-ms", "300"])
    with s.raw() as c:
        c.send(b"POST /v1/namespaces HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
        r = c.read_response()
        assert_error(r, 408, "RequestTimeoutException")
        assert c.closed_by_peer()
