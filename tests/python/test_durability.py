"""What a client was told survives kill -9 and restarts; SIGTERM is graceful."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests

from harness import HTTP_TIMEOUT, SIMPLE_SCHEMA_JSON, RawConn, table_url, unique

pytestmark = pytest.mark.single_node(reason="kills, signals and restarts its server")


def create_many(server, names, parent=()):
    """Creates each namespace on one keep-alive connection; every 200 is a
    promise that the namespace is durable."""
    with server.raw() as c:
        for n in names:
            body = json.dumps({"namespace": [*parent, n], "properties": {"i": n}}).encode()
            r = c.request("POST", "/v1/namespaces", body)
            assert r.status == 200, r.body


def list_names(server, parent=None):
    path = "/v1/namespaces" + (f"?parent={parent}" if parent else "")
    with server.raw() as c:
        r = c.request("GET", path)
        assert r.status == 200, r.body
        return r.json()["namespaces"]


def test_kill9_right_after_last_response(fresh_server):
    s = fresh_server
    names = [f"d{i:02d}" for i in range(50)]
    create_many(s, names)
    # No pause: SIGKILL as soon as the last 200 arrived.
    s.kill9()
    assert s.proc.returncode == -signal.SIGKILL
    s.start()
    assert list_names(s) == [[n] for n in names]
    with s.raw() as c:
        for n in names:
            r = c.request("GET", f"/v1/namespaces/{n}")
            assert r.status == 200, r.body
            assert r.json()["properties"] == {"i": n}


def test_kill9_keeps_updates_and_drops(fresh_server):
    s = fresh_server
    with s.raw() as c:
        for body in (
            {"namespace": ["keep"], "properties": {"a": "1", "b": "2"}},
            {"namespace": ["keep", "child"]},
            {"namespace": ["gone"]},
        ):
            assert c.request("POST", "/v1/namespaces", json.dumps(body).encode()).status == 200
        r = c.request("POST", "/v1/namespaces/keep/properties",
                      json.dumps({"removals": ["a"], "updates": {"c": "3"}}).encode())
        assert r.status == 200, r.body
        assert c.request("DELETE", "/v1/namespaces/gone").status == 204
    s.kill9()
    s.start()
    with s.raw() as c:
        assert c.request("GET", "/v1/namespaces/keep").json()["properties"] == {"b": "2", "c": "3"}
        assert c.request("GET", "/v1/namespaces/gone").status == 404
        assert c.request("GET", "/v1/namespaces/keep%1Fchild").status == 200


def test_repeated_kill9_cycles(fresh_server):
    s = fresh_server
    expected = []
    for cycle in range(3):
        names = [f"c{cycle}_{i:02d}" for i in range(10)]
        create_many(s, names)
        expected += [[n] for n in names]
        s.kill9()
        s.start()
        assert list_names(s) == expected


def test_kill9_during_concurrent_commits_keeps_every_acknowledged_one(fresh_server):
    """Many writers commit at once, so their pointer swaps share the store's
    group-commit rounds; kill -9 lands mid-round. Every commit answered 200
    is there after the restart, its metadata file too; an unanswered one may
    or may not be."""
    s = fresh_server
    writers, tables = 32, [f"t{i:02d}" for i in range(32)]
    http = requests.Session()
    assert http.post(s.api("namespaces"), json={"namespace": ["gc"]}, timeout=HTTP_TIMEOUT).status_code == 200
    for t in tables:
        r = http.post(table_url(s, ("gc",)), json={"name": t, "schema": SIMPLE_SCHEMA_JSON}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
    acked = {t: 0 for t in tables}
    stop = threading.Event()

    def commit_loop(table):
        session = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            change = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"n": str(n)}}]}
            try:
                r = session.post(table_url(s, ("gc",), table), json=change, timeout=HTTP_TIMEOUT)
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            acked[table] = n

    threads = [threading.Thread(target=commit_loop, args=(t,), daemon=True) for t in tables[:writers]]
    for t in threads:
        t.start()
    time.sleep(2)
    s.kill9()
    stop.set()
    for t in threads:
        t.join(HTTP_TIMEOUT)
    assert sum(acked.values()) >= 100, f"too few commits to mean much: {sum(acked.values())}"
    s.start()
    for t in tables:
        loaded = http.get(table_url(s, ("gc",), t), timeout=HTTP_TIMEOUT).json()
        n = int(loaded["metadata"]["properties"].get("n", "0"))
        # The next commit may have been done without its answer arriving.
        assert n in (acked[t], acked[t] + 1), f"{t}: acknowledged n={acked[t]}, found {n}"
        location = loaded["metadata-location"].removeprefix("file://")
        with open(location, "rb") as f:
            assert json.load(f)["properties"].get("n", "0") == str(n), f"{t}: its metadata file differs"
    http.close()


def test_sigterm_exits_zero_and_persists(fresh_server):
    s = fresh_server
    names = [unique("term") for _ in range(20)]
    create_many(s, names)
    # An idle keep-alive connection must not hold shutdown up.
    idle = s.raw()
    assert idle.request("GET", "/health/live").status == 200
    started = time.monotonic()
    code = s.stop()
    took = time.monotonic() - started
    idle.close()
    assert code == 0, f"graceful shutdown exited {code}\n{s.log_tail()}"
    assert took < 10, f"shutdown took {took:.1f}s"
    assert "store flushed" in s.log_text()
    s.start()
    assert sorted(map(tuple, list_names(s))) == sorted((n,) for n in names)


def test_sigint_exits_zero(fresh_server):
    s = fresh_server
    create_many(s, ["int_a"])
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(10) == 0, s.log_tail()
    s.start()
    assert list_names(s) == [["int_a"]]


def test_restart_keeps_ports_and_serves(fresh_server):
    s = fresh_server
    port, metrics_port = s.port, s.metrics_port
    create_many(s, ["r1"])
    assert s.restart() == 0
    assert (s.port, s.metrics_port) == (port, metrics_port)
    assert list_names(s) == [["r1"]]
    assert s.metrics().names()  # metrics listener is back too


def test_in_flight_request_completes_during_shutdown(fresh_server):
    """SIGTERM while a request is half sent: the server drains; the request,
    once completed, is answered, then the server exits 0."""
    s = fresh_server
    body = json.dumps({"namespace": ["drained"]}).encode()
    c = s.raw()
    try:
        c.send(RawConn.build("POST", "/v1/namespaces", body)[:-5])
        time.sleep(0.2)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        c.send(RawConn.build("POST", "/v1/namespaces", body)[-5:])
        r = c.read_response()
        assert r.status == 200, r.body
    finally:
        c.close()
    assert s.proc.wait(10) == 0, s.log_tail()
    s.start()
    assert list_names(s) == [["drained"]]


@pytest.mark.sled_only(reason="sled's snapshot files")
def test_a_start_discards_an_incomplete_snapshot(fresh_server):
    """A start interrupted by a crash or a full disk can leave sled's
    `snap.<lsn>.generating` behind; the next start discards it (and says so)
    instead of failing on it as a corrupt snapshot for ever."""
    s = fresh_server
    create_many(s, ["before_crash"])
    s.kill9()
    leftover = s.data_dir / "snap.FFFFFFFFFFFFFFFF.generating"
    leftover.touch()
    s.start()
    assert list_names(s) == [["before_crash"]]
    assert not leftover.exists()
    assert "discarding an incomplete store snapshot" in s.log_text()
