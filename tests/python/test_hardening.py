"""Hostile and broken clients (docs/security.md, "Limits and their
defaults"): slow-loris heads and bodies, idle keep-alive, the per-shard
connection limit, JSON depth and string limits, invalid UTF-8 and percent
escapes, broken chunked bodies.

What test_http_wire.py / test_http_errors.py already cover is not repeated
here: 413/431, a stalled (not trickled) body, malformed request lines and
headers, the `zz` chunk size, `%zz`/`%1`/`%FF%FE` in a namespace segment and
in `parent`, and closing mid-request. Every case ends by checking that the
process still runs and answers /health/live."""

from __future__ import annotations

import subprocess

import json
import select
import socket
import threading
import time

import pytest
import requests

from harness import (
    SIMPLE_SCHEMA_JSON,
    BingsanServer,
    RawConn,
    assert_error,
    assert_serving,
    run_threads,
    unique,
)
from test_http_wire import wait_connections

#: --request-timeout-ms of the slow-loris server.
REQUEST_TIMEOUT = 1.5
#: --idle-timeout-ms of the keep-alive server.
IDLE_TIMEOUT = 1.0


def create_body(*parts: str, **properties: str) -> bytes:
    return json.dumps({"namespace": list(parts), "properties": properties}).encode()


def chunked(body: bytes, size: int = 7) -> bytes:
    """`body` as chunks of `size` bytes plus the last chunk."""
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


def read_all(sock: socket.socket) -> bytes:
    """Everything until the peer closes (a reset ends it too)."""
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


# ------------------------------------------------------------------ slow clients
class Trickler(threading.Thread):
    """Sends `prefix` at once and then `payload` one byte every `interval`
    seconds on each connection, and records for each what the server sent
    and when it closed; gives up `give_up` seconds after the first byte."""

    def __init__(self, conns: list[RawConn], prefix: bytes, payload: bytes, interval: float, give_up: float):
        super().__init__(daemon=True)
        self.conns, self.prefix, self.payload = conns, prefix, payload
        self.interval, self.give_up = interval, give_up
        self.received = [b""] * len(conns)
        self.closed_at: list[float | None] = [None] * len(conns)
        self.started = 0.0
        self.sent = 0

    def _send(self, data: bytes) -> None:
        for k, c in enumerate(self.conns):
            if self.closed_at[k] is None:
                try:
                    c.sock.sendall(data)
                except OSError:
                    pass  # closed by the server: the read side records it

    def run(self) -> None:
        self.started = time.monotonic()
        self._send(self.prefix)
        deadline = self.started + self.give_up
        while time.monotonic() < deadline and None in self.closed_at:
            if self.sent < len(self.payload):
                self._send(self.payload[self.sent:self.sent + 1])
                self.sent += 1
            due = min(time.monotonic() + self.interval, deadline)
            while (left := due - time.monotonic()) > 0:
                open_ = {c.sock: k for k, c in enumerate(self.conns) if self.closed_at[k] is None}
                if not open_:
                    return
                readable, _, _ = select.select(list(open_), [], [], left)
                for sock in readable:
                    k = open_[sock]
                    try:
                        data = sock.recv(65536)
                    except ConnectionResetError:
                        data = b""
                    if data:
                        self.received[k] += data
                    else:
                        self.closed_at[k] = time.monotonic()


@pytest.fixture
def slow_server(server_factory):
    """One shard (slow clients and the healthy one share it), short request timeout."""
    return server_factory(name="slow", shards=1, extra_args=["--request-timeout-ms", str(int(REQUEST_TIMEOUT * 1000))])


def _slow_request(mode: str, ns: str) -> tuple[bytes, bytes]:
    """(sent at once, trickled) for a request that needs far longer than
    the timeout at 10 bytes a second."""
    body = create_body(ns, pad="p" * 150)
    if mode == "head":
        return b"", b"GET /v1/config HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n"
    if mode == "body":
        head = (f"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return head, body
    if mode == "chunked":
        head = b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        return head, chunked(body)
    raise AssertionError(mode)


@pytest.mark.single_node(reason="the node's own connection handling: nginx buffers, times out and holds connections itself")
@pytest.mark.parametrize("mode", ["head", "body", "chunked"])
def test_slow_loris_is_cut_off_while_others_are_served(slow_server, http, mode):
    """Bytes keep arriving (so no single read waits long), but the whole
    request does not arrive within --request-timeout-ms of its first byte:
    408 and close, within about the timeout; another client on the same
    shard gets quick 200s throughout."""
    s = slow_server
    ns = unique("slow")
    prefix, payload = _slow_request(mode, ns)
    assert len(payload) * 0.1 > 3 * REQUEST_TIMEOUT, "the trickle must outlast the timeout"
    conns = [s.raw(timeout=10) for _ in range(4)]
    try:
        t = Trickler(conns, prefix, payload, interval=0.1, give_up=2 * REQUEST_TIMEOUT + 1.0)
        t.start()
        statuses, slowest = [], 0.0
        while t.is_alive():
            began = time.monotonic()
            r = http.get(s.url("/v1/config"))
            slowest = max(slowest, time.monotonic() - began)
            statuses.append(r.status_code)
            time.sleep(0.05)
        t.join(5)
    finally:
        for c in conns:
            c.close()
    assert statuses and set(statuses) == {200}, statuses
    assert len(statuses) >= 10, f"only {len(statuses)} healthy requests during the slow ones"
    assert slowest < 1.0, f"a healthy request took {slowest:.2f}s while slow clients trickled"
    for k, c in enumerate(conns):
        assert t.closed_at[k] is not None, \
            f"slow {mode} connection {k} still open {2 * REQUEST_TIMEOUT + 1:.1f}s after its first byte"
        took = t.closed_at[k] - t.started
        assert 0.8 * REQUEST_TIMEOUT <= took <= 2 * REQUEST_TIMEOUT, f"closed after {took:.2f}s"
        if t.received[k]:
            c.buf = t.received[k]
            assert_error(c.read_response(), 408, "RequestTimeoutException")
            assert c.buf == b"", c.buf
    assert t.sent < len(payload), "the request was sent whole before the timeout"
    # The slow creates never happened.
    assert http.get(s.api(f"namespaces/{ns}")).status_code == 404
    assert_serving(s)


# ------------------------------------------------------------------ keep-alive
@pytest.mark.single_node(reason="the node's own connection handling: nginx buffers, times out and holds connections itself")
def test_idle_keep_alive_closed_after_idle_timeout(server_factory):
    """An idle keep-alive connection, and one that never sent a byte, are
    closed (without a response) about --idle-timeout-ms after they went
    idle; one that keeps sending requests more often stays open."""
    s = server_factory(name="idle", shards=1, extra_args=["--idle-timeout-ms", str(int(IDLE_TIMEOUT * 1000))])
    with s.raw() as idle, s.raw() as busy:
        assert idle.request("GET", "/health/live").status == 200
        went_idle = time.monotonic()
        silent = s.raw()  # connected, never sends
        try:
            closed: dict[str, tuple[float, bytes]] = {}
            next_busy = went_idle
            while time.monotonic() - went_idle < 2.5 * IDLE_TIMEOUT:
                for name, c in (("idle", idle), ("silent", silent)):
                    if name not in closed and select.select([c.sock], [], [], 0)[0]:
                        closed[name] = (time.monotonic() - went_idle, read_all(c.sock))
                if time.monotonic() >= next_busy:
                    assert busy.request("GET", "/health/live").status == 200
                    next_busy += 0.3 * IDLE_TIMEOUT
                time.sleep(0.02)
        finally:
            silent.close()
        for name in ("idle", "silent"):
            assert name in closed, f"{name} connection still open {2.5 * IDLE_TIMEOUT}s after going idle"
            took, data = closed[name]
            assert 0.8 * IDLE_TIMEOUT <= took <= 2 * IDLE_TIMEOUT, f"{name} closed after {took:.2f}s"
            assert data == b"", f"{name} got bytes on an idle close: {data[:200]!r}"
        # The busy one lived through 2.5 idle timeouts and still works.
        assert busy.request("GET", "/v1/config").status == 200
    assert_serving(s)


# ------------------------------------------------------------------ connection limit
CONN_LIMIT = 5


@pytest.fixture
def limited_server(server_factory):
    """One shard that admits CONN_LIMIT connections, none open yet."""
    s = server_factory(name="connlimit", shards=1, extra_args=["--max-connections-per-shard", str(CONN_LIMIT)])
    assert wait_connections(s, 0) == 0
    return s


def fill_to_limit(server, conns: list[RawConn]) -> None:
    """Opens connections until CONN_LIMIT are open, one request each (so
    each is accepted, and counted, before the next)."""
    while len(conns) < CONN_LIMIT:
        c = server.raw(timeout=5)
        conns.append(c)
        assert c.request("GET", "/health/live").status == 200
    assert wait_connections(server, CONN_LIMIT) == CONN_LIMIT


@pytest.mark.single_node(reason="the node's own connection handling: nginx buffers, times out and holds connections itself")
def test_connection_limit_refuses_then_recovers(limited_server):
    s = limited_server
    refused_before = s.metrics().sum("bingsan_http_connections_refused_total")
    conns: list[RawConn] = []
    try:
        fill_to_limit(s, conns)
        # The 6th: a 503, then closed; it is counted.
        with s.raw(timeout=5) as extra:
            r = extra.read_response()
            assert r.status == 503, (r.status, r.body[:200])
            assert r.headers.get("connection", "").lower() == "close"
            assert extra.closed_by_peer()
        assert s.metrics().sum("bingsan_http_connections_refused_total") == refused_before + 1
        # The admitted ones keep working.
        for c in conns:
            assert c.request("GET", "/v1/config").status == 200
        # Close two: two new connections are served again...
        for c in conns[:2]:
            c.close()
        del conns[:2]
        assert wait_connections(s, CONN_LIMIT - 2) == CONN_LIMIT - 2
        fill_to_limit(s, conns)
        for c in conns:
            assert c.request("GET", "/health/live").status == 200
        # ...and the limit holds again.
        with s.raw(timeout=5) as extra:
            assert extra.read_response().status == 503
            assert extra.closed_by_peer()
    finally:
        for c in conns:
            c.close()
    assert wait_connections(s, 0) == 0
    assert_serving(s)


@pytest.mark.single_node(reason="the node's own connection handling: nginx buffers, times out and holds connections itself")
def test_connection_limit_refusal_is_an_error_model(limited_server):
    s = limited_server
    conns: list[RawConn] = []
    try:
        fill_to_limit(s, conns)
        with s.raw(timeout=5) as extra:
            r = extra.read_response()
            leftover = extra.buf + read_all(extra.sock)
        assert leftover == b"", f"bytes after the 503 body: {leftover!r}"
        assert_error(r, 503, "ServiceUnavailableException")
    finally:
        for c in conns:
            c.close()
    # The shard notices the closes asynchronously: wait before a new connect.
    assert wait_connections(s, 0) == 0
    assert_serving(s)


# ------------------------------------------------------------------ JSON limits
def nested(depth: int) -> bytes:
    """A create-namespace body nested `depth` deep in all (the outer object
    counts as 1), through an unknown field that the request type ignores."""
    inner = depth - 1
    return b'{"namespace":["' + unique("deep").encode() + b'"],"extra":' + b"[" * inner + b"]" * inner + b"}"


@pytest.mark.parametrize("depth", [65, 100, 100_000])
def test_json_deeper_than_limit_is_400(server, depth):
    with server.raw() as c:
        err = assert_error(c.request("POST", "/v1/namespaces", nested(depth)), 400, "BadRequestException")
        assert "deep" in err["message"].lower() and "64" in err["message"], err
        # A 400 for the body keeps the connection.
        assert c.request("GET", "/health/live").status == 200
    assert_serving(server)


def test_json_depth_flag_is_bounded(tmp_path, binary):
    """A limit the shard stacks could not parse to is refused at start-up."""
    r = subprocess.run(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
         "--warehouse", str(tmp_path / "w"), "--max-json-depth", "20000"],
        capture_output=True, text=True, timeout=20,
    )
    assert r.returncode != 0
    assert "--max-json-depth" in r.stderr, r.stderr


def test_json_within_depth_limit_does_not_crash(tmp_path, binary):
    """Bodies the depth check lets through reach the JSON parser: none may
    take the process down, with the default limit (every depth up to 64) or
    a raised one. Not `server_factory`: the process may die here, and that
    is this test's verdict, not a teardown problem."""
    phases = [
        ([], (8, 16, 24, 32, 40, 48, 56, 64)),
        (["--max-json-depth", "256"], (128, 256)),
    ]
    for i, (args, depths) in enumerate(phases):
        s = BingsanServer(tmp_path / f"srv{i}", binary=binary, shards=1, name="depth", extra_args=args)
        s.start()
        try:
            for depth in depths:
                for shape, body, expected in (
                    ("ignored field", nested(depth), 200),
                    ("whole body", b"[" * depth + b"]" * depth, 400),
                ):
                    try:
                        with s.raw(timeout=10) as c:
                            status = c.request("POST", "/v1/namespaces", body).status
                    except (ConnectionError, OSError) as e:
                        status = repr(e)
                    time.sleep(0.05)
                    assert s.running, (f"JSON nested {depth} deep ({shape}, flags {args}) killed the server "
                                       f"(exit {s.proc.returncode})\n{s.log_tail(4)}")
                    assert status == expected, (depth, shape, status)
        finally:
            s.stop()
        assert s.proc.returncode == 0


@pytest.fixture
def small_json_server(server_factory):
    return server_factory(name="jsonlimits", extra_args=["--max-json-string-bytes", "1024"])


@pytest.mark.parametrize("where", ["value", "key", "namespace", "unknown-field"])
def test_json_string_over_limit_is_400(small_json_server, http, where):
    s = small_json_server
    ns = unique("str")
    long = "x" * 2000
    body = {
        "value": {"namespace": [ns], "properties": {"k": long}},
        "key": {"namespace": [ns], "properties": {long: "v"}},
        "namespace": {"namespace": [ns, long]},
        "unknown-field": {"namespace": [ns], "comment": long},
    }[where]
    r = http.post(s.api("namespaces"), data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    err = assert_error(r, 400, "BadRequestException")
    assert "1024" in err["message"], err
    assert http.get(s.api(f"namespaces/{ns}")).status_code == 404
    assert_serving(s)


def test_json_string_at_limit_is_accepted(small_json_server, http):
    s = small_json_server
    ns = unique("str")
    r = http.post(s.api("namespaces"), json={"namespace": [ns], "properties": {"k": "y" * 1024}})
    assert r.status_code == 200, r.text
    assert http.get(s.api(f"namespaces/{ns}")).json()["properties"]["k"] == "y" * 1024
    assert_serving(s)


# ------------------------------------------------------------------ invalid UTF-8 and escapes
@pytest.mark.parametrize(
    "body",
    [
        b'{"namespace":["NS\xff"]}',
        b'{"namespace":["NS\xc0\xaf"]}',  # overlong '/'
        b'{"namespace":["NS\xed\xa0\x80"]}',  # a UTF-16 surrogate, UTF-8 encoded
        b'{"namespace":["NS\xe2\x82"]}',  # truncated sequence
        b'{"namespace":["NS\\ud800"]}',  # lone surrogate escape
        b'{"namespace":["NS"],"properties":{"k":"\xfe"}}',
        b'{"namespace":["NS"],"properties":{"\xfe":"v"}}',
        b'{"namespace":["NS"],"ignored":"\xff"}',
        b'{"namespace":["NS"]}\xff',
    ],
    ids=["ff", "overlong", "surrogate", "truncated", "escaped-surrogate", "prop-value", "prop-key", "unknown-field",
         "trailing"],
)
def test_invalid_utf8_json_is_400(server, body):
    ns = unique("utf")
    with server.raw() as c:
        assert_error(c.request("POST", "/v1/namespaces", body.replace(b"NS", ns.encode())), 400, "BadRequestException")
        assert c.request("GET", f"/v1/namespaces/{ns}").status == 404
    assert_serving(server)


@pytest.fixture(scope="module")
def existing_ns(session_servers):
    server = session_servers("plain")
    ns = unique("paths")
    r = requests.post(server.api("namespaces"), json={"namespace": [ns]}, timeout=10)
    assert r.status_code == 200, r.text
    return ns


@pytest.mark.single_node(reason="malformed requests: nginx refuses some itself (HTML 400), so only the node shows its own parser")
@pytest.mark.parametrize(
    "target",
    [
        b"/v1/namespaces/{ns}/tables/%FF",
        b"/v1/namespaces/{ns}/tables/%C0%AF",
        b"/v1/namespaces/{ns}/views/%ED%A0%80",
        b"/v1/namespaces/{ns}/tables/%zz",
        b"/v1/namespaces/{ns}/tables/t%2",
        b"/v1/namespaces/{ns}/views/%",
        b"/v1/namespaces/{ns}/tables/a%00b",
        b"/v1/namespaces/a%00b",
        b"/v1/namespaces/{ns}%1F%FF",
        b"/v1/namespaces/\xff\xfe",  # raw bytes, not escaped
        b"/v1/namespaces?parent=%FF",
        b"/v1/namespaces?pageToken=%zz",
        b"/v1/namespaces?pageToken=%",
        b"/v1/namespaces?pageToken=%4",
        b"/v1/namespaces?pageToken=%FF%FE",
        b"/v1/namespaces/{ns}/tables?pageToken=%zz",
        b"/v1/namespaces/{ns}/views?pageToken=%zz",
        b"/v1/namespaces?pageSize=%zz",
    ],
)
def test_bad_escapes_and_utf8_in_paths_and_queries_are_400(server, existing_ns, target):
    path = target.replace(b"{ns}", existing_ns.encode())
    with server.raw() as c:
        c.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_error(c.read_response(), 400, "BadRequestException")
    assert_serving(server)


@pytest.mark.single_node(reason="malformed requests: nginx refuses some itself (HTML 400), so only the node shows its own parser")
@pytest.mark.parametrize(
    "header,status",
    [
        (b"Idempotency-Key: \xff\xfe\xfd", 400),  # not a UUID
        (b"Authorization: Bearer \xff\xfe", 200),  # auth is off: not read
        (b"Expect: \xff100-continue", 200),  # an unknown expectation is ignored
        (b"Connection: \xffclose", 200),
        (b"Content-Type: application/json; charset=\xff", 200),  # the body is JSON whatever it says
        (b"Transfer-Encoding: \xffchunked", 400),  # no coding we know
    ],
)
def test_non_utf8_header_values_get_no_5xx(server, header, status):
    ns = unique("hdr")
    body = create_body(ns)
    with server.raw() as c:
        c.send(b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\n" + header
               + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        r = c.read_response()
        if status == 200:
            assert r.status == 200 and r.json()["namespace"] == [ns], (r.status, r.body[:300])
        else:
            assert_error(r, status, "BadRequestException")
    assert_serving(server)


# ------------------------------------------------------------------ broken chunked bodies
@pytest.mark.single_node(reason="malformed requests: nginx refuses some itself (HTML 400), so only the node shows its own parser")
def test_truncated_chunked_bodies_then_eof(fresh_server):
    """A chunked body cut off anywhere, then the client half-closes: the
    server ends the connection at once (not after the 30 s request timeout),
    without an answer to a request that never arrived; nothing is created,
    nothing leaks."""
    s = fresh_server
    ns = unique("trunc")
    body = chunked(create_body(ns))
    cuts = [
        b"1",                       # inside the first size line
        b"1a",                      # size line without CRLF
        body[:4],                   # size line done, no data
        body[:9],                   # inside the data
        b"5\r\nhello",              # data without its CRLF
        b"5\r\nhello\r\n",          # no last chunk
        b"5\r\nhello\r\n0\r\n",     # last chunk, no final CRLF
        b"0\r\nX-Trailer: 1\r\n",   # inside the trailers
        b"5;ext=" + b"e" * 50,      # inside a chunk extension
    ]
    head = b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for cut in cuts:
        with s.raw(timeout=5) as c:
            c.send(head + cut)
            c.sock.shutdown(socket.SHUT_WR)
            began = time.monotonic()
            got = read_all(c.sock)
            took = time.monotonic() - began
            assert took < 3.0, f"cut {cut[:20]!r}: server held the half-closed connection {took:.1f}s"
            assert got == b"", (cut, got[:200])
        # And a plain close (no half-close) mid-chunk too.
        c = s.raw(timeout=5)
        c.send(head + cut)
        c.close()
        assert_serving(s)
    assert requests.get(s.api(f"namespaces/{ns}"), timeout=10).status_code == 404
    assert wait_connections(s, 0) == 0
    assert_serving(s)


@pytest.mark.single_node(reason="malformed requests: nginx refuses some itself (HTML 400), so only the node shows its own parser")
@pytest.mark.parametrize(
    "wire,status",
    [
        (b"5zz\r\nhello\r\n0\r\n\r\n", 400),
        (b"-5\r\nhello\r\n0\r\n\r\n", 400),
        (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
        (b"\r\nhello\r\n0\r\n\r\n", 400),
        (b"5\nhello\r\n0\r\n\r\n", 400),
        (b"1" + b"0" * 20 + b"\r\n", 400),  # more than 64 bits
        (b"5\r\nhelloXX0\r\n\r\n", 400),  # data not followed by CRLF
        (b"\xff\xfe\r\nhello\r\n0\r\n\r\n", 400),
        (b"7fffffffffffffff\r\n", 413),  # fits in 64 bits, far beyond --max-body-bytes
    ],
    ids=["trailing-garbage", "negative", "0x-prefix", "empty", "bare-lf", "overflow", "no-crlf-after-data",
         "binary", "huge"],
)
def test_garbage_chunk_size(server, wire, status):
    with server.raw() as c:
        c.send(b"POST /v1/namespaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + wire)
        kind = "BadRequestException" if status == 400 else "PayloadTooLargeException"
        err = assert_error(c.read_response(), status, kind)
        if status == 400:
            assert "chunk" in err["message"], err
        # Framing errors end the connection (a bad JSON body would not).
        assert c.closed_by_peer(timeout=2)
    assert_serving(server)


# ------------------------------------------------------------------ descriptor budget
FD_LIMIT = 1024
#: What src/server/os.rs keeps back from RLIMIT_NOFILE: 256 for the process,
#: 16 per shard, 2 per concurrent warehouse write (64 per shard by default),
#: and on PostgreSQL the shard's database connections (2 by default).
FD_RESERVE = 256 + 16 + 2 * 64
WRITERS = 400


@pytest.mark.single_node(reason="the descriptor limit of one process")
def test_connections_and_writers_fit_the_descriptor_limit(server_factory):
    """Under a 1024-descriptor limit the shard admits what the limit leaves
    after the process and its capped warehouse writes, and a burst of
    concurrent creates over a full house of connections all succeed: without
    the write cap, 400 creates want 800 descriptors at once and run out."""
    s = server_factory(name="fdlimit", shards=1, rlimit_nofile=FD_LIMIT)
    budget = FD_LIMIT - FD_RESERVE - (2 if s.store else 0)
    ns = unique("fd")
    conns: list[RawConn] = []
    try:
        with s.raw(timeout=10) as c:
            body = json.dumps({"namespace": [ns]}).encode()
            assert c.request("POST", s.api_path("namespaces"), body).status == 200
        assert wait_connections(s, 0) == 0
        while len(conns) < budget:
            c = s.raw(timeout=30)
            conns.append(c)
            assert c.request("GET", "/health/live").status == 200
        assert wait_connections(s, budget) == budget
        # One more is refused: the derived limit is in force.
        with s.raw(timeout=5) as extra:
            assert extra.read_response().status == 503

        writers, idle = conns[:WRITERS], conns[WRITERS:]
        start = threading.Barrier(WRITERS)
        answers: list[tuple[int, bytes]] = [(0, b"")] * WRITERS

        def create(i: int) -> None:
            body = json.dumps({"name": f"t{i}", "schema": SIMPLE_SCHEMA_JSON}).encode()
            start.wait()
            r = writers[i].request("POST", s.api_path(f"namespaces/{ns}/tables"), body)
            answers[i] = (r.status, r.body[:300])

        run_threads(create, WRITERS, timeout=120)
        failed = [(i, a) for i, a in enumerate(answers) if a[0] != 200]
        assert not failed, f"{len(failed)} creates failed, e.g. {failed[:3]}\n{s.log_tail()}"
        # Every connection survived the burst.
        for c in idle + writers:
            assert c.request("GET", "/health/live").status == 200
    finally:
        for c in conns:
            c.close()
    assert wait_connections(s, 0) == 0
    assert_serving(s)


@pytest.mark.single_node(reason="the node's own listening port")
def test_second_server_on_a_busy_port_refuses_to_start(server, tmp_path):
    """SO_REUSEPORT would let a second server share the port and take half
    its connections; it must fail at start-up instead."""
    other = BingsanServer(tmp_path / "second", name="second", shards=1)
    other.port = server.port
    # Not other.start(): its readiness probe would reach the first server.
    done = subprocess.run(other.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{server.port}" in done.stderr, done.stderr[-2000:]
    assert_serving(server)
